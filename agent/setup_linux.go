package main

// Namespace mode (--setup-root). bubblewrap starts us as PID 1 in fresh user/pid/mount/net/
// ipc/uts namespaces with all capabilities of the new user namespace, LOWER bound read-only.
// We build the sandbox root ourselves because bwrap cannot size-cap an overlay:
//
//	tmpfs(size=disk) ─┬─ upper/  work/
//	                  ├─ shm/  → bound on root/dev/shm: shared memory counts against the disk
//	                  └─ root/ = overlay(lower=LOWER, upper, work)  ← pivot_root here
//	                       └─ workspace/ = overlay(lower=WS-LOWER, WS-MNT/upper, WS-MNT/work)  (--workspace-*)
//
// bwrap's /dev is an unsized tmpfs: it is capped at devBytes before it is bound in, and the
// host's /proc files that tell a sandbox about the host kernel are masked (maskedProc). With
// --cpus, /sys holds only the sandbox's CPUs (cpus_linux.go).
//
// then drop every privilege for good (privdrop_linux.go, seccomp_linux.go).

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

const (
	scratchDir = "/.kiln-scratch"
	// devBytes caps the tmpfs behind /dev: device nodes and symlinks need no data blocks.
	devBytes  = 1 << 20
	devInodes = 1024
)

// maskedProc: host kernel facts (boot command line, build config, symbols, key names, timers)
// and knobs a sandbox has no use for; what programs read (cpuinfo, meminfo, self, …) stays.
// /dev/null is bound over each file and an empty read-only tmpfs over each directory, as
// container runtimes do; paths this kernel lacks are skipped.
var maskedProc = []string{
	"cmdline", "config.gz", "bootconfig", "kallsyms", "kcore", "keys", "key-users", "timer_list",
	"sched_debug", "sysrq-trigger", "latency_stats", "timer_stats", "iomem", "ioports",
	"vmallocinfo", "kpagecount", "kpageflags", "kpagecgroup", "acpi", "scsi", "asound",
}

type setupStep struct {
	name string
	do   func() error
}

func setupNamespaceRoot(lower string, diskBytes int64, ws workspaceFlags, cpuList, nameserver string) error {
	if diskBytes <= 0 {
		return fmt.Errorf("--disk-bytes must be positive")
	}
	var cpus []int
	if cpuList != "" {
		var err error
		if cpus, err = parseCPUList(cpuList); err != nil {
			return fmt.Errorf("--cpus: %w", err)
		}
	}
	root := filepath.Join(scratchDir, "root")
	steps := []setupStep{
		{"mkdir scratch", func() error { return os.MkdirAll(scratchDir, 0o755) }},
		{"mount tmpfs", func() error {
			return syscall.Mount("tmpfs", scratchDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV,
				fmt.Sprintf("size=%d,mode=0755", diskBytes))
		}},
		{"mkdir layers", func() error { return mkdirs(0o755, scratchDir+"/upper", scratchDir+"/work", scratchDir+"/shm", root) }},
		{"shm mode", func() error { return os.Chmod(scratchDir+"/shm", 0o777|os.ModeSticky) }},
		{"sandbox dirs", func() error { return sandboxDirs(scratchDir + "/upper") }},
		{"resolv.conf", func() error { return writeSandboxResolvConf(scratchDir+"/upper/etc", nameserver) }},
		{"mount overlay", func() error {
			opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work,userxattr", lower, scratchDir, scratchDir)
			return syscall.Mount("overlay", root, "overlay", syscall.MS_NOSUID, opts)
		}},
		{"mount workspace", func() error { return mountWorkspace(ws, root+"/workspace") }},
		{"mkdir mountpoints", func() error { return mkdirs(0o755, root+"/dev", root+"/proc", root+"/.kiln-old") }},
		{"size /dev", func() error { return resizeTmpfs("/dev", devBytes, devInodes) }},
		{"bind /dev", func() error { return syscall.Mount("/dev", root+"/dev", "", syscall.MS_BIND|syscall.MS_REC, "") }},
		{"bind /dev/shm", func() error { return bindShm(root + "/dev/shm") }},
		{"mount /proc", func() error { return mountProc(root + "/proc") }},
		{"mask /proc", func() error { return maskProc(root+"/proc", root+"/dev/null") }},
		{"visible CPUs", func() error {
			if cpus == nil {
				return nil
			}
			if err := setAffinity(cpus); err != nil {
				return fmt.Errorf("sched_setaffinity %s: %w", cpuList, err)
			}
			if err := mountSysCPUs(root+"/sys", cpus); err != nil {
				return err
			}
			return bindCPUInfo(root+"/proc", scratchDir, cpus)
		}},
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

// resizeTmpfs caps the tmpfs mounted at dir, keeping its mount flags (a remount without them
// would clear nosuid/nodev).
func resizeTmpfs(dir string, sizeBytes, inodes int) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	const tmpfsMagic = 0x01021994
	if st.Type != tmpfsMagic {
		return fmt.Errorf("%s is not a tmpfs (bwrap --dev makes one)", dir)
	}
	keep := uintptr(st.Flags) & (syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
	return syscall.Mount("", dir, "", syscall.MS_REMOUNT|keep, fmt.Sprintf("size=%d,nr_inodes=%d", sizeBytes, inodes))
}

// bindShm puts the disk tmpfs's shm/ on /dev/shm: what a sandbox stores in shared memory counts
// against its disk cap, and (tmpfs pages) its memory limit, like every other file it writes.
func bindShm(target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(scratchDir+"/shm", target, "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	_ = os.Lchown(scratchDir+"/shm", cfg.execUID, cfg.execGID)
	return nil
}

func maskProc(procDir, devNull string) error {
	for _, name := range maskedProc {
		p := procDir + "/" + name
		st, err := os.Lstat(p)
		if err != nil {
			continue // this kernel has no such file
		}
		if st.IsDir() {
			err = syscall.Mount("tmpfs", p, "tmpfs", syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "size=0,mode=0555")
		} else {
			err = syscall.Mount(devNull, p, "", syscall.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask /proc/%s: %w", name, err)
		}
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

// writeSandboxResolvConf names kiln's resolver in the sandbox: a file of the writable layer, put there
// before the overlay is mounted (the image's /etc belongs to a uid the sandbox does not map), so it
// hides whatever the image has at that path, a symlink included. Without a network there is no route to it,
// so a lookup fails at once instead of waiting for a timeout.
func writeSandboxResolvConf(etc, nameserver string) error {
	if nameserver == "" {
		return nil
	}
	if ip := net.ParseIP(nameserver); ip == nil || ip.To4() == nil {
		return fmt.Errorf("--nameserver %q is not an IPv4 address", nameserver)
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	return os.WriteFile(etc+"/resolv.conf", []byte("nameserver "+nameserver+"\noptions timeout:2 attempts:1\n"), 0o644)
}
