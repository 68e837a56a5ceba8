package main

// Starting an exec inside its cgroup (cgroup_linux.go) before it runs an instruction of its own.
// Go 1.19 has no SysProcAttr.CgroupFD, so:
//   - namespace sandboxes: the exec starts as a shim (this binary with execShimFlag) that waits
//     on a pipe until the agent has moved it into the cgroup, then execve's the command; an
//     execve error comes back on a second, close-on-exec pipe;
//   - VMs: the exec starts traced and stops right after its execve; the agent places it and
//     detaches (the namespace agent's seccomp filter denies ptrace, so it cannot do this).

import (
	"encoding/binary"
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
	return startShimInCgroup(cmd, cg)
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
