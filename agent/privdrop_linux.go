package main

// Dropping privileges for good. Capabilities, the bounding set and no_new_privs are per thread
// in Linux and a Go program has many threads, any of which may fork the next exec. Rather than
// change every thread (one stop-the-world AllThreadsSyscall per capability: ~5 ms), the agent
// drops everything on one locked thread and re-executes itself from it: the new process starts
// with that thread's state as its only thread, and every thread it makes inherits it.

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const (
	prCapbsetDrop     = 24
	linuxCapabilityV3 = 0x20080522
	defaultLastCap    = 40
)

// reexecUnprivileged sets no_new_privs, empties the bounding and ambient sets and clears every
// capability on the calling thread, then execs the agent again with args + --privileges-dropped.
func reexecUnprivileged(args []string) error {
	runtime.LockOSThread() // never unlocked: this thread becomes the new process
	if err := prctl(prSetNoNewPrivs, 1); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	for c := 0; c <= lastCap(); c++ {
		if err := prctl(prCapbsetDrop, uintptr(c)); err != nil && err != syscall.EINVAL {
			return fmt.Errorf("drop bounding cap %d: %w", c, err)
		}
	}
	if err := prctl(prCapAmbient, prCapAmbientClear); err != nil && err != syscall.EINVAL {
		return fmt.Errorf("clear ambient caps: %w", err)
	}
	hdr := struct {
		version uint32
		pid     int32
	}{version: linuxCapabilityV3}
	var data [2]struct{ effective, permitted, inheritable uint32 }
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	// /proc/self/exe: the agent's path was on the old root, which pivot_root detached.
	return syscall.Exec("/proc/self/exe", append([]string{os.Args[0], "--privileges-dropped"}, args...), os.Environ())
}

// confirmUnprivileged checks, in the re-executed agent, that the drop really happened.
func confirmUnprivileged() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	want := map[string]string{"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1"}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if w, check := want[k]; ok && check {
			if strings.TrimSpace(v) != w {
				return fmt.Errorf("after dropping privileges %s is %s, want %s", k, strings.TrimSpace(v), w)
			}
			delete(want, k)
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("cannot confirm privileges were dropped (missing %v in /proc/self/status)", want)
	}
	return nil
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return defaultLastCap
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return defaultLastCap
	}
	return n
}

// awaitGo blocks until the service says the sandbox is recorded (one byte on fd). End of file
// means the service died before it wrote the record that lets its next start find this sandbox
// again: the sandbox ends here, as PID 1, rather than live on where nobody can reach or delete it.
func awaitGo(fd int) error {
	f := os.NewFile(uintptr(fd), "await")
	if f == nil {
		return fmt.Errorf("--await-fd %d is not an open descriptor", fd)
	}
	defer f.Close()
	var b [1]byte
	if n, err := f.Read(b[:]); n != 1 {
		return fmt.Errorf("the service went away before it recorded this sandbox (%v): nothing could reach it, so it ends", err)
	}
	return nil
}
