package main

// The single wait4(-1) loop. As PID 1 (or a child subreaper in tests) the agent inherits every
// orphan, so nothing else may call wait: a per-child Wait would race this loop for exits.
//
// Registration and reaping share one lock: startRegistered holds it across fork+register and
// the reaper holds it across wait4+dispatch, so an exit can never be reaped before its waiter
// exists. Exits nobody registered are orphans and are dropped after reaping.

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

type exitInfo struct {
	status syscall.WaitStatus
	rusage syscall.Rusage
}

type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan exitInfo
	// stops receives the first stop of a child started traced (startTraced), by pid.
	stops map[int]chan syscall.WaitStatus
	// registered wakes the loop when a child is registered, so it starts its safety tick.
	registered chan struct{}
}

var theReaper = &reaper{waiters: map[int]chan exitInfo{}, stops: map[int]chan syscall.WaitStatus{}, registered: make(chan struct{}, 1)}
var reaperOnce sync.Once

// startReaper starts the loop once. PR_SET_CHILD_SUBREAPER makes orphans of our execs come to
// us even when we are not PID 1 (tests), so tree kill and reaping behave the same there.
func startReaper() {
	reaperOnce.Do(func() {
		_ = prctl(prSetChildSubreaper, 1)
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		go func() {
			// Belt and braces: while children are registered, a lost SIGCHLD costs at most a
			// second. Without children there is nothing to wait for, and an idle sandbox (a
			// VM template, a warm clone) is not woken every second.
			// One ticker, running only while needed (not a new timer at every wake-up: a busy
			// sandbox's children exit many times a second).
			ticker := time.NewTicker(time.Second)
			ticker.Stop()
			var tick <-chan time.Time
			for {
				select {
				case <-ch:
				case <-theReaper.registered:
				case <-tick:
				}
				running := theReaper.reap()
				if execCgroups != nil {
					execCgroups.sweep() // an exec cgroup empties when its last process is reaped
				}
				switch {
				case running && tick == nil:
					ticker.Reset(time.Second)
					tick = ticker.C
				case !running && tick != nil:
					ticker.Stop()
					tick = nil
				}
			}
		}()
	})
}

// reap collects every exited child; it reports whether registered children are still running.
func (r *reaper) reap() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		var ru syscall.Rusage
		pid, err := r.next(&ws, &ru)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return len(r.waiters) > 0
		}
		if ws.Stopped() {
			if st, ok := r.stops[pid]; ok {
				delete(r.stops, pid)
				st <- ws // buffered: never blocks
			}
			continue
		}
		if ws.Continued() {
			continue
		}
		delete(r.stops, pid) // died before its first stop: the exit says so
		if w, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			w <- exitInfo{status: ws, rusage: ru} // buffered: never blocks
		}
	}
}

// next waits (without blocking) for any exited child as PID 1, whose children include every
// orphan of the sandbox. Anywhere else (the agent's own tests, run in a host process) only the
// registered children are the reaper's: a wait for any child would take one that an exec.Cmd
// elsewhere in the process is waiting for. Called with r.mu held.
func (r *reaper) next(ws *syscall.WaitStatus, ru *syscall.Rusage) (int, error) {
	if os.Getpid() == 1 {
		return syscall.Wait4(-1, ws, syscall.WNOHANG, ru)
	}
	pids := make([]int, 0, len(r.waiters)+len(r.stops))
	for pid := range r.waiters {
		pids = append(pids, pid)
	}
	for pid := range r.stops {
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		if got, err := syscall.Wait4(pid, ws, syscall.WNOHANG, ru); got > 0 || (err != nil && err != syscall.ECHILD) {
			return got, err
		}
	}
	return 0, nil
}

// startRegistered starts cmd and returns a channel that receives its exit exactly once.
// Never call cmd.Wait or cmd.Process.Wait on it.
func startRegistered(cmd *exec.Cmd) (<-chan exitInfo, error) {
	exit, _, err := startWatched(cmd, false)
	return exit, err
}

// startWatched is startRegistered that, with stops, also hands over the child's first stop
// (a child started with SysProcAttr.Ptrace stops at its execve).
func startWatched(cmd *exec.Cmd, stops bool) (<-chan exitInfo, <-chan syscall.WaitStatus, error) {
	startReaper()
	theReaper.mu.Lock()
	defer theReaper.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	ch := make(chan exitInfo, 1)
	theReaper.waiters[cmd.Process.Pid] = ch
	var st chan syscall.WaitStatus
	if stops {
		st = make(chan syscall.WaitStatus, 1)
		theReaper.stops[cmd.Process.Pid] = st
	}
	select {
	case theReaper.registered <- struct{}{}:
	default: // a wake-up is already pending
	}
	return ch, st, nil
}

func prctl(option int, arg2 uintptr) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, uintptr(option), arg2, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
