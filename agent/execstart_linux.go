package main

// Starting an exec inside its cgroup (cgroup_linux.go) before it runs an instruction of its own.
// Go 1.19 has no SysProcAttr.CgroupFD, so:
//   - namespace sandboxes on cgroup v1: a thread of the agent of its own moves itself into the
//     exec's cgroups (v1 places threads one by one, through "tasks") and forks the exec from
//     there, so the exec is born inside; that thread then ends with its goroutine and never runs
//     anything else. No second process start per exec (the shim below is a Go runtime start:
//     ~1.5 ms of CPU, a few percent of a one-shot run);
//   - namespace sandboxes on cgroup v2 (a process moves whole): the exec starts as a shim (this
//     binary with execShimFlag) that waits on a pipe until the agent has moved it into the
//     cgroup, then execve's the command; an execve error comes back on a second, close-on-exec pipe;
//   - VMs: the exec starts traced and stops right after its execve; the agent places it and
//     detaches (the namespace agent's seccomp filter denies ptrace, so it cannot do this).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// startInCgroup starts cmd so that it is in cg before it runs an instruction of its own. On
// success cmd.Process is the exec's process.
func startInCgroup(cmd *exec.Cmd, cg *execCgroup) (<-chan exitInfo, error) {
	if cg.set.traced {
		return startTracedInCgroup(cmd, cg)
	}
	if !cg.set.v2 && !cg.set.shimOnly {
		exit, err := startFromThreadInCgroup(cmd, cg)
		if err != errThreadNotPlaced {
			return exit, err
		}
		// The host did not hand over the "tasks" files (an older service): the shim needs only cgroup.procs.
	}
	return startShimInCgroup(cmd, cg)
}

var errThreadNotPlaced = errors.New("cannot move a thread into the exec's cgroup")

// startFromThreadInCgroup (cgroup v1): forks cmd from a thread that has moved itself into the
// exec's cgroups, then moves that thread out of the exec's own cgroup (back to the delegated one
// above it: an exec cgroup holds nothing of the agent once its start returns, or its kill would
// find the agent's pid in cgroup.procs) and lets it end: it is locked to its goroutine and never
// handed back to the agent's scheduler, so nothing else of the agent ever runs or forks from it.
// It is never the thread group leader (Go cannot end the main thread; it would stay behind).
func startFromThreadInCgroup(cmd *exec.Cmd, cg *execCgroup) (<-chan exitInfo, error) {
	type started struct {
		exit <-chan exitInfo
		err  error
	}
	var onThread func(out chan<- started)
	onThread = func(out chan<- started) {
		runtime.LockOSThread() // never unlocked on the thread that forks: it ends here
		tid := syscall.Gettid()
		if tid == syscall.Getpid() {
			// Held by this goroutine until the retry is done, the retry runs on another thread.
			inner := make(chan started, 1)
			go onThread(inner)
			r := <-inner
			runtime.UnlockOSThread()
			out <- r
			return
		}
		if err := cg.placeThread(tid); err != nil {
			if errors.Is(err, syscall.EACCES) {
				err = errThreadNotPlaced
			}
			out <- started{err: cg.leaveThread(tid, err)}
			return
		}
		exit, err := startRegistered(cmd)
		if err = cg.leaveThread(tid, err); err != nil && exit != nil {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL) // reaped through exit
			<-exit
			exit = nil
		}
		out <- started{exit, err}
	}
	done := make(chan started, 1)
	go onThread(done)
	r := <-done
	return r.exit, r.err
}

// startTracedInCgroup: the child asks to be traced and so stops right after its execve; the
// agent places it and detaches. ptrace requests must come from the thread that forked it.
func startTracedInCgroup(cmd *exec.Cmd, cg *execCgroup) (<-chan exitInfo, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	attr := *cmd.SysProcAttr
	attr.Ptrace = true
	cmd.SysProcAttr = &attr
	exit, stopped, err := startWatched(cmd, true)
	if err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	select {
	case ws = <-stopped:
	case <-exit:
		return nil, fmt.Errorf("exec died before it started")
	}
	err = cg.place(pid)
	if err == nil {
		err = cg.set.resetChildOOMScore(pid)
	}
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// A stop other than execve's SIGTRAP is a signal that arrived first: deliver it on detach.
	sig := uintptr(0)
	if s := ws.StopSignal(); s != syscall.SIGTRAP {
		sig = uintptr(s)
	}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PTRACE, syscall.PTRACE_DETACH, uintptr(pid), 0, sig, 0, 0); e != 0 && err == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		err = fmt.Errorf("detach from exec: %w", e)
	}
	if err != nil {
		return nil, err
	}
	return exit, nil
}

// startShimInCgroup starts cmd through the shim, moves it into cg, then lets it execve.
func startShimInCgroup(cmd *exec.Cmd, cg *execCgroup) (<-chan exitInfo, error) {
	goR, goW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer goW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		goR.Close()
		return nil, err
	}
	defer statusR.Close()
	shim := &exec.Cmd{
		Path: "/proc/self/exe", Args: append([]string{"kiln-exec-shim", execShimFlag, cmd.Path}, cmd.Args...),
		Env: cmd.Env, Dir: cmd.Dir, Stdin: cmd.Stdin, Stdout: cmd.Stdout, Stderr: cmd.Stderr,
		ExtraFiles: []*os.File{goR, statusW}, SysProcAttr: cmd.SysProcAttr,
	}
	exit, err := startRegistered(shim)
	goR.Close()
	statusW.Close()
	if err != nil {
		return nil, err
	}
	pid := shim.Process.Pid
	if err := cg.place(pid); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL) // goW closes too: the shim would exit anyway
		return nil, err
	}
	if err := cg.set.resetChildOOMScore(pid); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL) // goW closes too: the shim would exit anyway
		return nil, err
	}
	if _, err := goW.Write([]byte{1}); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return nil, fmt.Errorf("release exec shim: %w", err)
	}
	var status [4]byte
	if n, _ := io.ReadFull(statusR, status[:]); n == len(status) {
		return nil, &os.PathError{Op: "exec", Path: cmd.Path, Err: syscall.Errno(binary.LittleEndian.Uint32(status[:]))}
	}
	cmd.Process = shim.Process
	return exit, nil
}

// runExecShim is the child side of startInCgroup: wait until placed, then become the command.
func runExecShim(path string, argv []string) {
	var b [1]byte
	for {
		n, err := syscall.Read(shimGoFd, b[:])
		if err == syscall.EINTR {
			continue
		}
		if n != 1 {
			fmt.Fprintf(os.Stderr, "kiln-agent: exec not released (read %d, %v)\n", n, err)
			os.Exit(127) // the agent gave up on this exec
		}
		break
	}
	syscall.Close(shimGoFd)
	syscall.CloseOnExec(shimStatusFd)
	err := syscall.Exec(path, argv, os.Environ())
	errno, ok := err.(syscall.Errno)
	if !ok {
		errno = syscall.EINVAL
	}
	var out [4]byte
	binary.LittleEndian.PutUint32(out[:], uint32(errno))
	_, _ = syscall.Write(shimStatusFd, out[:])
	os.Exit(127)
}
