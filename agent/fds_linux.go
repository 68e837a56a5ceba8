package main

// Descriptors a process inherited without close-on-exec (the host service's own, e.g. a pipe
// its parent left open) must never reach sandbox code or a VMM. Node's child_process does not
// close them, so the host starts bwrap, QEMU and Firecracker through `kiln-agent
// --exec-clean-fds N -- prog args`; the agent marks them before every exec as well.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const (
	sysCloseRange     = 436
	closeRangeCloexec = 1 << 2
	cleanFdsFlag      = "--exec-clean-fds"
)

// markCloexecFrom sets close-on-exec on every descriptor >= from. Marking instead of closing
// leaves the Go runtime's own descriptors alone until the exec.
func markCloexecFrom(from int) error {
	if _, _, e := syscall.RawSyscall(sysCloseRange, uintptr(from), uintptr(^uint32(0)), closeRangeCloexec); e == 0 {
		return nil
	}
	// Before Linux 5.11: one fcntl per open descriptor.
	names, err := readDirNames("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < from {
			continue
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, syscall.FD_CLOEXEC); e != 0 && e != syscall.EBADF {
			return fmt.Errorf("fcntl(%d, F_SETFD): %w", fd, e)
		}
	}
	return nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// execCleanFds is `kiln-agent --exec-clean-fds N -- prog args…`: exec prog with only the
// descriptors 0..N-1 of ours. A name without "/" is looked up in PATH (or the usual default,
// as execvp does: the host may spawn us with an empty environment).
func execCleanFds(args []string) error {
	keep, tap, argv, err := parseCleanFdsArgs(args)
	if err != nil {
		return err
	}
	path, err := searchPath(argv[0], os.Getenv("PATH"))
	if err != nil {
		return err
	}
	if err := markCloexecFrom(keep); err != nil {
		return fmt.Errorf("%s: %w", cleanFdsFlag, err)
	}
	if tap != "" {
		// A VMM in its own network namespace cannot make a host TAP: it inherits one, open.
		if err := openTapAt(tap, keep); err != nil {
			return err
		}
	}
	return fmt.Errorf("exec %s: %w", path, syscall.Exec(path, argv, os.Environ()))
}

// parseCleanFdsArgs reads `N [--tap NAME] -- program [args…]`.
func parseCleanFdsArgs(args []string) (keep int, tap string, argv []string, err error) {
	usage := fmt.Errorf("usage: kiln-agent %s N [--tap NAME] -- program [args...]", cleanFdsFlag)
	if len(args) < 3 {
		return 0, "", nil, usage
	}
	keep, err = strconv.Atoi(args[0])
	if err != nil || keep < 0 {
		return 0, "", nil, fmt.Errorf("%s: %q is not a descriptor count", cleanFdsFlag, args[0])
	}
	rest := args[1:]
	if rest[0] == "--tap" {
		if len(rest) < 4 {
			return 0, "", nil, usage
		}
		tap, rest = rest[1], rest[2:]
		if err := checkIfName(tap); err != nil {
			return 0, "", nil, err
		}
	}
	if rest[0] != "--" || len(rest) < 2 {
		return 0, "", nil, usage
	}
	return keep, tap, rest[1:], nil
}

func searchPath(name, pathVar string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if pathVar == "" {
		pathVar = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, dir := range filepath.SplitList(pathVar) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, pathVar)
}
