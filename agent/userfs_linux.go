package main

// File, archive and list ops act on the sandbox's files as the exec user would, never as the
// agent. In a VM the agent is root: a link the sandbox planted (/workspace/report.txt ->
// /etc/shadow) must meet the exec user's permissions, not root's, and a process swapping links
// while an op runs must never steer it somewhere the user could not go. Two parts:
//
//   - asExecUser runs the op on a locked OS thread whose filesystem identity (fsuid, fsgid, no
//     supplementary groups) is the exec user's. Linux keeps credentials per thread; setfsuid away
//     from 0 also drops the file capabilities (DAC_OVERRIDE, FOWNER, CHOWN…) of that thread only.
//     Whatever any link points to, the kernel checks the user's rights at every step.
//   - openInRoot opens with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS): the kernel resolves
//     every component, links included, inside cfg.root in one call, so nothing can change between
//     a check and the use. Kernels before 5.6 fall back to the component walk (paths.go) and
//     O_NOFOLLOW, where the credentials alone keep a race within the user's reach.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const (
	sysOpenat2          = 437
	oPath               = 0x200000 // O_PATH: not in package syscall
	resolveNoMagiclinks = 0x02
	resolveNoSymlinks   = 0x04
	resolveInRoot       = 0x10
)

type openHow struct {
	flags   uint64
	mode    uint64
	resolve uint64
}

// asExecUser runs fn with the exec user's filesystem identity (nothing to change when the agent
// already is that user: namespace mode, tests). fn runs on a goroutine of its own whose thread is
// given back only after the agent's identity is restored; if that fails, the thread exits with
// the goroutine instead of serving anything else.
func asExecUser(fn func() error) error {
	uid, gid := cfg.execUID, cfg.execGID
	if uid == os.Geteuid() && gid == os.Getegid() {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		groups, err := syscall.Getgroups()
		if err != nil {
			done <- err
			return
		}
		if err := setThreadFsIDs(uid, gid, nil); err != nil {
			done <- fmt.Errorf("act as uid %d: %w", uid, err)
			return // thread stays locked: it exits with this goroutine
		}
		err = fn()
		if setThreadFsIDs(os.Geteuid(), os.Getegid(), groups) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// setThreadFsIDs changes the calling thread's fsgid, supplementary groups and fsuid only (raw
// syscalls: package syscall would apply setgroups to every thread) and checks the result.
func setThreadFsIDs(uid, gid int, groups []int) error {
	gids := make([]uint32, len(groups)+1)
	for i, g := range groups {
		gids[i] = uint32(g)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(groups)), uintptr(unsafe.Pointer(&gids[0])), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	syscall.RawSyscall(syscall.SYS_SETFSGID, uintptr(gid), 0, 0)
	syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(uid), 0, 0)
	// Both calls return the previous id and never fail; -1 changes nothing and reports the current one.
	minusOne := ^uintptr(0)
	if g, _, _ := syscall.RawSyscall(syscall.SYS_SETFSGID, minusOne, 0, 0); int(uint32(g)) != gid {
		return fmt.Errorf("fsgid is %d, want %d", g, gid)
	}
	if u, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, minusOne, 0, 0); int(uint32(u)) != uid {
		return fmt.Errorf("fsuid is %d, want %d", u, uid)
	}
	return nil
}

// isKernelPath: /proc and /sys, which the host reads for the guest's state (timer_list,
// vmstat, …), some of it root-only. Sandbox code cannot change what such a path names (no
// mounts, pseudo filesystems), and openKernelFile refuses any link on the way, so these reads
// keep the agent's identity without a planted link ever leading one elsewhere.
func isKernelPath(p string) bool {
	return strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/")
}

func openKernelFile(p, hostPath string) (*os.File, error) {
	f, err := openat2InRoot(p, hostPath, os.O_RDONLY|syscall.O_NONBLOCK, 0, resolveInRoot|resolveNoSymlinks|resolveNoMagiclinks)
	if err == syscall.ENOSYS {
		if clean, _ := checkPath(p); hostPath != filepath.Join(cfg.root, clean) {
			return nil, newOpError(codePathEscape, "%s goes through a symlink", p)
		}
		return os.OpenFile(hostPath, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	}
	if isErrno(err, syscall.ELOOP) {
		return nil, newOpError(codePathEscape, "%s goes through a symlink", p)
	}
	return f, err
}

// openInRoot opens the sandbox path p (already checked by resolve, which also gives the
// fallback's host path) with every link resolved inside cfg.root by the kernel.
func openInRoot(p, hostPath string, flags int, perm uint32) (*os.File, error) {
	f, err := openat2InRoot(p, hostPath, flags, perm, resolveInRoot|resolveNoMagiclinks)
	if err == syscall.ENOSYS {
		return os.OpenFile(hostPath, flags|syscall.O_NOFOLLOW, os.FileMode(perm))
	}
	return f, err
}

// openDirInRoot opens the sandbox directory p for listing or walking (fs.list, archive.get);
// a path that is not a directory is the caller's mistake.
func openDirInRoot(p string) (*os.File, error) {
	hostPath, err := resolve(p)
	if err != nil {
		return nil, err
	}
	dir, err := openInRoot(p, hostPath, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if isErrno(err, syscall.ENOTDIR) {
		return nil, newOpError(codeNotADirectory, "%s is not a directory", p)
	}
	return dir, err
}

// openat2InRoot returns syscall.ENOSYS itself when the kernel has no openat2 (before 5.6).
func openat2InRoot(p, hostPath string, flags int, perm uint32, resolve uint64) (*os.File, error) {
	clean, err := checkPath(p)
	if err != nil {
		return nil, err
	}
	root, err := syscall.Open(cfg.root, oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(root)
	rel := "." + clean
	name, err := syscall.BytePtrFromString(rel)
	if err != nil {
		return nil, err
	}
	how := openHow{flags: uint64(flags | syscall.O_CLOEXEC), mode: uint64(perm), resolve: resolve}
	for {
		fd, _, e := syscall.Syscall6(sysOpenat2, uintptr(root), uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		switch e {
		case 0:
			return os.NewFile(fd, hostPath), nil
		case syscall.EINTR, syscall.EAGAIN: // EAGAIN: a rename raced the lookup; the kernel asks for a retry
			continue
		case syscall.ENOSYS:
			return nil, e
		default:
			return nil, &os.PathError{Op: "open", Path: p, Err: e}
		}
	}
}

// inDir names the entry name of the open directory dir as a path: the kernel resolves
// /proc/self/fd/N to exactly that directory, so Lstat and Readlink on it cannot be redirected.
func inDir(dir *os.File, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + name
}

// openAt opens name inside the open directory dir without following a link there.
func openAt(dir *os.File, name string, flags int) (*os.File, error) {
	fd, err := syscall.Openat(int(dir.Fd()), name, flags|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}
