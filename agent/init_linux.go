// OWNED BY THE VM BACKEND ENGINEER (src/backends/qemu, src/vmimage). Agent-core changes go
// through them.
//
// --init: kiln-agent as PID 1 of a microVM's initramfs (built by src/vmimage). It loads the
// modules listed in /kiln/modules.order, mounts the pack's squashfs (/dev/vda) read-only under a
// size-limited tmpfs through overlayfs, moves /dev /proc /sys into it, switches root, and goes on
// as the normal agent in the same process (still PID 1) on the VM transport. Any failure exits
// PID 1, which panics the kernel: the host then reports the console tail as BOOT_FAILED.
//
// There is no re-exec: under software emulation a second start of the Go runtime costs tens of
// ms of boot. What the runtime must see from its first instruction (GODEBUG) comes from the
// kernel command line, which hands unknown KEY=value words to init's environment.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	initModulesOrder = "/kiln/modules.order"
	initModulesDir   = "/kiln/modules"
	initLower        = "/kiln/lower"
	initRW           = "/kiln/rw"
	initNewRoot      = "/newroot"
	initRootDisk     = "/dev/vda"
	initDefaultDisk  = 256
	initDefaultUID   = 1000
	initMaxProcs     = 1024
	rlimitNproc      = 6 // RLIMIT_NPROC (not exported by package syscall)
)

// bootParams are the kiln.* words of the kernel command line (see src/vmimage/cmdline.ts).
type bootParams struct {
	diskMib int
	execUID int
	panic   bool
	// workspace: "ro" or "rw" (.git writable) when the VM has workspace drives (workspace_vm_linux.go)
	workspace string
}

// runInit sets the guest up and returns the flags the agent proper serves with.
func runInit() (flags, error) {
	f, err := initRun()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kiln-init: %v\n", err)
		// PID 1 exiting panics the kernel ("Attempted to kill init"), which ends the VM (panic=-1,
		// -no-reboot): the host sees the VM exit and reads this line from the console.
		os.Exit(1)
	}
	return f, nil
}

func initRun() (flags, error) {
	if err := initMountEarly(); err != nil {
		return flags{}, err
	}
	params := parseBootParams(readFileString("/proc/cmdline"))
	if params.panic {
		return flags{}, errors.New("kiln.panic=1 on the kernel command line: failing on purpose")
	}
	if err := loadModules(); err != nil {
		return flags{}, err
	}
	if err := mountRoot(params.diskMib); err != nil {
		return flags{}, err
	}
	if err := switchRoot(); err != nil {
		return flags{}, err
	}
	prepareRoot(params.execUID)
	if params.workspace != "" {
		if err := mountVMWorkspace(params.execUID, params.workspace == "rw"); err != nil {
			return flags{}, fmt.Errorf("workspace: %w", err)
		}
	}
	if err := setupVMCgroups(); err != nil {
		// Not fatal: execs fall back to process-group and tag kill, which a detached process escapes.
		fmt.Fprintf(os.Stderr, "kiln-init: no exec cgroups (%v): detached processes may outlive their exec\n", err)
	}
	limitProcesses()
	// The kernel gives init only HOME=/, TERM=linux and the command line's KEY=value words. Execs
	// build their own environment; this is the agent's.
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	os.Setenv("HOME", "/root")
	return flags{transport: "auto", execUID: params.execUID, execGID: params.execUID}, nil
}

func initMountEarly() error {
	mounts := []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(m.src, m.dst, m.fs, m.flags, m.data); err != nil && err != syscall.EBUSY {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err)
		}
	}
	return nil
}

func parseBootParams(cmdline string) bootParams {
	p := bootParams{diskMib: initDefaultDisk, execUID: initDefaultUID}
	for _, word := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(word, "=")
		switch k {
		case "kiln.disk_mib":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				p.diskMib = n
			}
		case "kiln.exec_uid":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				p.execUID = n
			}
		case "kiln.workspace":
			if v == "ro" || v == "rw" {
				p.workspace = v
			}
		case "kiln.panic":
			p.panic = v == "1"
		}
	}
	return p
}

func sysFinitModule() uintptr {
	if runtime.GOARCH == "arm64" {
		return 273
	}
	return 313 // amd64
}

// loadModules loads the initramfs's modules in the order src/vmimage resolved (dependencies
// first). A line "<file> <id>" is a driver for virtio device <id>: it is skipped when the VM has
// no such device (QEMU offers no vsock, Firecracker no console port here).
func loadModules() error {
	mods, err := parseModulesOrder(readFileString(initModulesOrder))
	if err != nil {
		return fmt.Errorf("%s: %w", initModulesOrder, err)
	}
	for _, m := range mods {
		if m.virtioDevice != 0 && !hasVirtioDevice(fmt.Sprintf("0x%04x", m.virtioDevice)) {
			continue
		}
		name := m.file
		f, err := os.Open(initModulesDir + "/" + name)
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		empty := []byte{0}
		_, _, errno := syscall.Syscall(sysFinitModule(), f.Fd(), uintptr(unsafe.Pointer(&empty[0])), 0)
		f.Close()
		if errno != 0 && errno != syscall.EEXIST {
			return fmt.Errorf("load module %s: %w", name, errno)
		}
	}
	return nil
}

type guestModule struct {
	file string
	// virtioDevice: load only when a virtio device with this ID exists (0: always).
	virtioDevice int
}

// parseModulesOrder reads src/vmimage's modules.order: "<file> [<virtio device ID>]" a line.
func parseModulesOrder(text string) ([]guestModule, error) {
	var mods []guestModule
	for _, line := range strings.Split(text, "\n") {
		words := strings.Fields(line)
		switch len(words) {
		case 0:
			continue
		case 1:
			mods = append(mods, guestModule{file: words[0]})
		case 2:
			id, err := strconv.Atoi(words[1])
			if err != nil || id <= 0 {
				return nil, fmt.Errorf("bad virtio device ID in %q", line)
			}
			mods = append(mods, guestModule{file: words[0], virtioDevice: id})
		default:
			return nil, fmt.Errorf("bad line %q", line)
		}
	}
	return mods, nil
}

func mountRoot(diskMib int) error {
	if err := waitForPath(initRootDisk, 5*time.Second); err != nil {
		return fmt.Errorf("root disk: %w (is the pack image attached as the first virtio-blk device?)", err)
	}
	for _, d := range []string{initLower, initRW, initNewRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := syscall.Mount(initRootDisk, initLower, "squashfs", syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount the pack image %s (squashfs): %w", initRootDisk, err)
	}
	if err := syscall.Mount("tmpfs", initRW, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%dm,mode=0755", diskMib)); err != nil {
		return fmt.Errorf("mount the writable layer (tmpfs %d MiB): %w", diskMib, err)
	}
	for _, d := range []string{initRW + "/upper", initRW + "/work", initRW + "/shm"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// shm/ becomes /dev/shm (switchRoot): shared memory counts against the disk cap like every
	// other file the sandbox writes, instead of a tmpfs of its own worth half the guest's RAM.
	if err := os.Chmod(initRW+"/shm", 0o777|os.ModeSticky); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", initLower, initRW, initRW)
	// nosuid: no set-id program of the pack (su, newgrp…) lifts an exec to root, and nothing the
	// sandbox writes (/workspace, /tmp) can be one; a caller who wants root asks for uid 0.
	if err := syscall.Mount("overlay", initNewRoot, "overlay", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount the root overlay: %w", err)
	}
	return nil
}

// switchRoot is switch_root(8) without deleting the initramfs: /init keeps running from it.
func switchRoot() error {
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := os.MkdirAll(initNewRoot+d, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(d, initNewRoot+d, "", syscall.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the new root: %w", d, err)
		}
	}
	if err := os.MkdirAll(initNewRoot+"/dev/shm", 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(initRW+"/shm", initNewRoot+"/dev/shm", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the disk's shm/ on /dev/shm: %w", err)
	}
	if err := syscall.Chdir(initNewRoot); err != nil {
		return err
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the new root onto /: %w", err)
	}
	if err := syscall.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return syscall.Chdir("/")
}

// prepareRoot adds what a Debian userland expects and a VM has no udev/systemd to provide.
// Failures here are not fatal: a pack without /dev/pts only loses tty execs.
func prepareRoot(execUID int) {
	_ = os.MkdirAll("/dev/pts", 0o755)
	_ = syscall.Mount("devpts", "/dev/pts", "devpts", syscall.MS_NOSUID|syscall.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666")
	_ = os.Remove("/dev/ptmx")
	_ = os.Symlink("pts/ptmx", "/dev/ptmx")
	// nsdelegate as systemd mounts it: a cgroup namespace is a delegation boundary.
	cgFlags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
	if syscall.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", cgFlags, "nsdelegate") != nil {
		_ = syscall.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", cgFlags, "")
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		_ = os.Symlink(l[0], l[1])
	}
	_ = os.MkdirAll("/tmp", 0o1777)
	_ = os.Chmod("/tmp", 0o1777)
	if _, err := os.Stat("/workspace"); err != nil {
		_ = os.MkdirAll("/workspace", 0o755)
		_ = os.Chown("/workspace", execUID, execUID)
	}
	_ = syscall.Sethostname([]byte("kiln"))
	loopbackUp()
	nicUp()
	// Proactive compaction wakes kcompactd every 500 ms to defragment memory for huge pages a
	// sandbox does not need; at 0 it sleeps until asked.
	_ = os.WriteFile("/proc/sys/vm/compaction_proactiveness", []byte("0"), 0)
}

// limitProcesses caps processes per (non-root) uid: inherited by the agent and every exec, it
// stops a fork bomb at "Resource temporarily unavailable" instead of exhausting guest memory.
func limitProcesses() {
	lim := syscall.Rlimit{Cur: initMaxProcs, Max: initMaxProcs}
	_ = syscall.Setrlimit(rlimitNproc, &lim)
}

// loopbackUp sets IFF_UP on lo: there is no network, but programs still talk to localhost.
func loopbackUp() {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	var ifr [40]byte
	copy(ifr[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return
	}
	flags := *(*uint16)(unsafe.Pointer(&ifr[16]))
	*(*uint16)(unsafe.Pointer(&ifr[16])) = flags | syscall.IFF_UP
	syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0])))
}

func waitForPath(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func readFileString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}
