package main

// Per-exec cgroups. Every process an exec starts is born into a cgroup of its own, and no way
// of detaching takes it out: a new session or process group, a cleared environment, being
// non-dumpable or re-parented to PID 1 all leave the cgroup as it was. Timeout, cancel and kill
// end the whole cgroup (v2 cgroup.kill; v1: pids.max=0 so nothing forks, then SIGKILL until
// empty).
//
// Namespace sandboxes: the host delegates the sandbox's "user" cgroup to the sandbox uid and
// binds it at /.kiln/cgroup/<hierarchy>; setup opens it while still privileged, before
// pivot_root detaches the old root, and hands the descriptors (not close-on-exec) across the
// re-exec in KILN_CGROUP_FDS. User code runs as the agent's uid, so what keeps it away from the
// cgroupfs is that nothing of it is reachable: no mount, and the descriptors are only in the
// agent, which is not dumpable: its /proc/1/fd entries can be listed but not followed (that
// takes ptrace access). VMs: cgroup2 is mounted by init; the exec user does not own it.
//
// How an exec gets into its cgroup before it runs: execstart_linux.go.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	cgroupFdsEnv       = "KILN_CGROUP_FDS"
	delegatedCgroupDir = "/.kiln/cgroup"
	vmExecCgroup       = "/sys/fs/cgroup/kiln-exec"
	execShimFlag       = "--kiln-exec-shim"
	shimGoFd           = 3 // the shim reads one byte here once it is in its cgroup
	shimStatusFd       = 4 // the shim writes execve's errno here (close-on-exec: EOF = success)
	cgroupKillRounds   = 200
)

// cgroupHier is one delegated directory: the tracking hierarchy (v2 "unified" or v1 "pids") gets
// an exec-<n> child per exec; other v1 hierarchies (memory) only take the process itself.
type cgroupHier struct {
	name  string
	fd    int
	track bool
}

type cgroupSet struct {
	hiers     []cgroupHier
	v2        bool
	seq       uint64
	mu        sync.Mutex
	lingering []string // exec cgroups whose processes outlived the exec's main process
	// resetOOMScore: the agent runs at oom_score_adj -1000 (VM PID 1), which children inherit.
	resetOOMScore bool
	// traced: start execs traced (they stop at execve) instead of through the shim, which saves
	// a second Go runtime start per exec (tens of ms under software emulation). VMs only: the
	// namespace agent's seccomp filter denies ptrace, to it and to user code.
	traced bool
	// shimOnly: start through the shim on cgroup v1 too (tests of the shim on a v1 host).
	shimOnly bool
}

// execCgroups is nil when the agent has no cgroup to use (tests outside a sandbox): exec then
// falls back to the process-group, descendant and tag kill of treekill_linux.go.
var execCgroups *cgroupSet

func init() {
	if len(os.Args) > 1 && os.Args[1] == execShimFlag {
		runExecShim(os.Args[2], os.Args[3:]) // never returns
	}
	if v, ok := os.LookupEnv(cgroupFdsEnv); ok {
		os.Unsetenv(cgroupFdsEnv)
		set, err := parseCgroupFds(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kiln-agent: %s: %v\n", cgroupFdsEnv, err)
			return
		}
		execCgroups = set
	}
}

// openDelegatedCgroups runs in namespace setup, privileged and before pivot_root: it opens every
// directory the host bound under /.kiln/cgroup and leaves the descriptors open across the re-exec.
func openDelegatedCgroups() error {
	entries, err := os.ReadDir(delegatedCgroupDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no cgroup handed in: tree kill falls back to process groups and tags
	}
	if err != nil {
		return err
	}
	var parts []string
	for _, e := range entries {
		fd, err := syscall.Open(delegatedCgroupDir+"/"+e.Name(), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", e.Name(), err)
		}
		parts = append(parts, e.Name()+"="+strconv.Itoa(fd))
	}
	return os.Setenv(cgroupFdsEnv, strings.Join(parts, ","))
}

func parseCgroupFds(v string) (*cgroupSet, error) {
	set := &cgroupSet{}
	for _, part := range strings.Split(v, ",") {
		name, fdText, ok := strings.Cut(part, "=")
		fd, err := strconv.Atoi(fdText)
		if !ok || err != nil || fd < 3 {
			return nil, fmt.Errorf("bad entry %q", part)
		}
		syscall.CloseOnExec(fd)
		h := cgroupHier{name: name, fd: fd, track: name == "unified" || name == "pids"}
		set.v2 = set.v2 || name == "unified"
		set.hiers = append(set.hiers, h)
	}
	tracked := 0
	for _, h := range set.hiers {
		if h.track {
			tracked++
		}
	}
	if tracked != 1 {
		return nil, fmt.Errorf("need exactly one of unified or pids in %q", v)
	}
	return set, nil
}

// setupVMCgroups runs in VM init (root, cgroup2 mounted on /sys/fs/cgroup): execs get cgroups
// under kiln-exec, and PID 1 takes itself out of the OOM killer's choice.
func setupVMCgroups() error {
	if err := os.Mkdir(vmExecCgroup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fd, err := syscall.Open(vmExecCgroup, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	execCgroups = &cgroupSet{v2: true, hiers: []cgroupHier{{name: "unified", fd: fd, track: true}}, resetOOMScore: true, traced: true}
	// Inherited by every child: startInCgroup sets each exec's back to 0 (and, being privileged,
	// its floor too, so user code cannot make itself unkillable and deadlock the guest).
	return os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0)
}

// guardOOMScore makes PID 1's OOM score files read-only mounts. The agent is not dumpable, so
// its /proc files belong to the user namespace's root: the uid user code runs as, which could
// otherwise raise the agent's oom_score_adj and make it the OOM killer's first choice.
func guardOOMScore(procPid1 string) error {
	for _, f := range []string{"oom_score_adj", "oom_adj"} {
		p := procPid1 + "/" + f
		if err := syscall.Mount(p, p, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", f, err)
		}
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
		if err := syscall.Mount(p, p, "", flags, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", f, err)
		}
	}
	return nil
}

func (s *cgroupSet) resetChildOOMScore(pid int) error {
	if !s.resetOOMScore {
		return nil
	}
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte("0"), 0); err != nil {
		return fmt.Errorf("reset the exec's oom_score_adj: %w", err)
	}
	return nil
}

// execCgroup is one exec's cgroup (a directory below the tracking hierarchy).
type execCgroup struct {
	set  *cgroupSet
	name string
}

func (s *cgroupSet) tracking() cgroupHier {
	for _, h := range s.hiers {
		if h.track {
			return h
		}
	}
	panic("cgroup set without a tracking hierarchy")
}

func (s *cgroupSet) newExec() (*execCgroup, error) {
	s.sweep()
	name := "exec-" + strconv.FormatUint(atomic.AddUint64(&s.seq, 1), 10)
	if err := syscall.Mkdirat(s.tracking().fd, name, 0o755); err != nil {
		return nil, fmt.Errorf("create exec cgroup %s: %w", name, err)
	}
	return &execCgroup{set: s, name: name}, nil
}

// place moves pid into the exec's cgroup (and into the user cgroup of every other hierarchy).
func (e *execCgroup) place(pid int) error {
	for _, h := range e.set.hiers {
		path := "cgroup.procs"
		if h.track {
			path = e.name + "/cgroup.procs"
		}
		if err := writeAt(h.fd, path, strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("move exec into cgroup %s/%s: %w", h.name, path, err)
		}
	}
	return nil
}

// placeThread moves one thread of the agent there (cgroup v1 only: its "tasks" files), the
// tracking hierarchy last: a failure before it leaves the thread outside the exec's own cgroup.
func (e *execCgroup) placeThread(tid int) error {
	for _, h := range e.set.hiers {
		if !h.track {
			if err := writeAt(h.fd, "tasks", strconv.Itoa(tid)); err != nil {
				return fmt.Errorf("move a thread into cgroup %s/tasks: %w", h.name, err)
			}
		}
	}
	if err := writeAt(e.set.tracking().fd, e.name+"/tasks", strconv.Itoa(tid)); err != nil {
		return fmt.Errorf("move a thread into cgroup %s/tasks: %w", e.name, err)
	}
	return nil
}

// leaveThread moves the thread placeThread moved back out of the exec's own cgroup, into the
// delegated one above it, and returns err (or the move's error when err is nil).
func (e *execCgroup) leaveThread(tid int, err error) error {
	if moveErr := writeAt(e.set.tracking().fd, "tasks", strconv.Itoa(tid)); moveErr != nil {
		if err == nil {
			err = fmt.Errorf("move a thread out of cgroup %s: %w", e.name, moveErr)
		}
	}
	return err
}

func (e *execCgroup) procs() []int {
	b, err := readAt(e.set.tracking().fd, e.name+"/cgroup.procs")
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// signal sends sig once to every process of the exec.
func (e *execCgroup) signal(sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		e.kill()
		return
	}
	for _, pid := range e.procs() {
		_ = syscall.Kill(pid, sig)
	}
}

// kill ends every process of the exec and returns once the cgroup is empty (bounded).
func (e *execCgroup) kill() {
	fd := e.set.tracking().fd
	killed := false
	if e.set.v2 {
		killed = writeAt(fd, e.name+"/cgroup.kill", "1") == nil
	} else {
		_ = writeAt(fd, e.name+"/pids.max", "0") // no fork succeeds any more: the loop below converges
	}
	for round := 0; round < cgroupKillRounds; round++ {
		pids := e.procs()
		if len(pids) == 0 {
			return
		}
		if !killed || round > 0 {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(time.Duration(min(round+1, 20)) * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "kiln-agent: exec cgroup %s still has processes after %d kill rounds\n", e.name, cgroupKillRounds)
}

// release removes the exec's cgroup, or keeps it for the sweep while processes still run in it
// (an exec may leave a server running for the next one).
func (e *execCgroup) release() {
	if rmdirAt(e.set.tracking().fd, e.name) == nil {
		return
	}
	e.set.mu.Lock()
	e.set.lingering = append(e.set.lingering, e.name)
	e.set.mu.Unlock()
}

// sweep removes exec cgroups whose last process has exited (called by the reaper and each exec).
func (s *cgroupSet) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := s.lingering[:0]
	for _, name := range s.lingering {
		if err := rmdirAt(s.tracking().fd, name); err != nil && err != syscall.ENOENT {
			left = append(left, name)
		}
	}
	s.lingering = left
}

func writeAt(dirfd int, path, value string) error {
	fd, err := syscall.Openat(dirfd, path, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	_, err = syscall.Write(fd, []byte(value))
	return err
}

func readAt(dirfd int, path string) ([]byte, error) {
	fd, err := syscall.Openat(dirfd, path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return io.ReadAll(f)
}

func rmdirAt(dirfd int, path string) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	const atRemoveDir = 0x200
	if _, _, e := syscall.Syscall(syscall.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), atRemoveDir); e != 0 {
		return e
	}
	return nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}
