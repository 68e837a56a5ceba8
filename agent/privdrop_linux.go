package main

// Dropping privileges for good, on every thread. Capabilities, the bounding set and
// no_new_privs are per thread in Linux; a Go program has many threads and any of them may
// fork the next exec, so each change goes through AllThreadsSyscall (needs CGO_ENABLED=0).

import (
	"fmt"
	"os"
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

func allThreadsPrctl(option, arg2 uintptr) error {
	_, _, e := syscall.AllThreadsSyscall6(syscall.SYS_PRCTL, option, arg2, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// dropPrivileges: no_new_privs (setuid binaries cannot regain anything), empty bounding and
// ambient sets, then all capability sets cleared.
func dropPrivileges() error {
	if err := allThreadsPrctl(prSetNoNewPrivs, 1); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	for c := 0; c <= lastCap(); c++ {
		if err := allThreadsPrctl(prCapbsetDrop, uintptr(c)); err != nil && err != syscall.EINVAL {
			return fmt.Errorf("drop bounding cap %d: %w", c, err)
		}
	}
	if err := allThreadsPrctl(prCapAmbient, prCapAmbientClear); err != nil && err != syscall.EINVAL {
		return fmt.Errorf("clear ambient caps: %w", err)
	}
	hdr := struct {
		version uint32
		pid     int32
	}{version: linuxCapabilityV3}
	var data [2]struct{ effective, permitted, inheritable uint32 }
	_, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if e != 0 {
		return fmt.Errorf("capset: %w", e)
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
