package main

// Namespace mode (--setup-root). bubblewrap starts us as PID 1 in fresh user/pid/mount/net/
// ipc/uts namespaces with all capabilities of the new user namespace, LOWER bound read-only.
// We build the sandbox root ourselves because bwrap cannot size-cap an overlay:
//
//	tmpfs(size=disk) ─┬─ upper/  work/
//	                  └─ root/ = overlay(lower=LOWER, upper, work)  ← pivot_root here
//
// then drop every privilege for good (privdrop_linux.go, seccomp_linux.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const scratchDir = "/.kiln-scratch"

type setupStep struct {
	name string
	do   func() error
}

func setupNamespaceRoot(lower string, diskBytes int64) error {
	if diskBytes <= 0 {
		return fmt.Errorf("--disk-bytes must be positive")
	}
	root := filepath.Join(scratchDir, "root")
	steps := []setupStep{
		{"mkdir scratch", func() error { return os.MkdirAll(scratchDir, 0o755) }},
		{"mount tmpfs", func() error {
			return syscall.Mount("tmpfs", scratchDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV,
				fmt.Sprintf("size=%d,mode=0755", diskBytes))
		}},
		{"mkdir layers", func() error { return mkdirs(0o755, scratchDir+"/upper", scratchDir+"/work", root) }},
		{"sandbox dirs", func() error { return sandboxDirs(scratchDir + "/upper") }},
		{"mount overlay", func() error {
			opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work,userxattr", lower, scratchDir, scratchDir)
			return syscall.Mount("overlay", root, "overlay", syscall.MS_NOSUID, opts)
		}},
		{"mkdir mountpoints", func() error { return mkdirs(0o755, root+"/dev", root+"/proc", root+"/.kiln-old") }},
		{"bind /dev", func() error { return syscall.Mount("/dev", root+"/dev", "", syscall.MS_BIND|syscall.MS_REC, "") }},
		{"mount /proc", func() error { return mountProc(root + "/proc") }},
		{"guard oom score", func() error { return guardOOMScore(root + "/proc/1") }},
		{"open cgroup dirs", openDelegatedCgroups}, // before pivot_root: the old root goes away
		{"pivot_root", func() error { return syscall.PivotRoot(root, root+"/.kiln-old") }},
		{"chdir /", func() error { return syscall.Chdir("/") }},
		{"detach old root", func() error { return syscall.Unmount("/.kiln-old", syscall.MNT_DETACH) }},
		{"remove old root dir", func() error { return os.Remove("/.kiln-old") }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// mountProc mounts a fresh proc for our pid namespace. The kernel refuses that in a user
// namespace unless a fully visible proc is already mounted, so fall back to binding bwrap's
// (--proc /proc), which also shows only sandbox pids.
func mountProc(target string) error {
	err := syscall.Mount("proc", target, "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "")
	if err == nil {
		return nil
	}
	if berr := syscall.Mount("/proc", target, "", syscall.MS_BIND|syscall.MS_REC, ""); berr != nil {
		return fmt.Errorf("%v (bind fallback: %v; pass --proc /proc to bwrap)", err, berr)
	}
	return nil
}

// sandboxDirs creates what exec expects in the UPPER layer, before the overlay is mounted. The
// image's files belong to host root, which is unmapped in our user namespace: we may not chmod
// or chown them, and a lower /workspace owned by someone else would not be writable. A directory
// in the upper layer gives the merged directory its owner and mode, so these are ours. /tmp stays
// in the overlay so it counts against the disk cap like everything else.
func sandboxDirs(upper string) error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{"/tmp", 0o777 | os.ModeSticky}, {"/workspace", 0o755}} {
		p := upper + d.path
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
		_ = os.Lchown(p, cfg.execUID, cfg.execGID)
	}
	return nil
}

func mkdirs(mode os.FileMode, dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, mode); err != nil {
			return err
		}
	}
	return nil
}
