package main

// The seccomp filter of namespace sandboxes. Sandbox code already runs with zero capabilities,
// so most of these calls would fail anyway; the filter removes the kernel attack surface behind
// them (a bug reachable without privileges is still a host-kernel bug) and closes the ways to
// regain privileges (new user namespaces). Socket families are allow-listed, not deny-listed: a
// family nobody thought of (AF_VSOCK ignores network namespaces) stays closed. x86_64 only: the
// host is x86_64.

import (
	"fmt"
	"syscall"
	"unsafe"
)

const (
	auditArchX86_64 = 0xc000003e
	x32SyscallBit   = 0x40000000

	retKillProcess = 0x80000000
	retErrno       = 0x00050000
	retAllow       = 0x7fff0000

	bpfLd   = 0x00
	bpfW    = 0x00
	bpfAbs  = 0x20
	bpfJmp  = 0x05
	bpfJeq  = 0x10
	bpfJge  = 0x30
	bpfJset = 0x40
	bpfK    = 0x00
	bpfRet  = 0x06

	seccompSetModeFilter   = 1
	seccompFilterFlagTsync = 1
	sysSeccomp             = 317

	offNr     = 0
	offArch   = 4
	offArg0Lo = 16 // args[0], low 32 bits on little-endian (the kernel reads these ints as 32-bit)
	offArg2Lo = 32 // args[2]

	// CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET. CLONE_NEWTIME (0x80) is
	// omitted: in clone() those bits are the exit signal; unshare, which takes it, is denied.
	cloneNewMask = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
)

type denyRule struct {
	nr    uint32
	name  string
	errno syscall.Errno
}

// denyTable: every syscall refused outright, grouped by why.
var denyTable = []denyRule{
	// Filesystem topology: the sandbox root is fixed once set up; new mounts could hide or
	// expose paths and the new mount API is a large, young attack surface.
	{165, "mount", syscall.EPERM}, {166, "umount2", syscall.EPERM}, {155, "pivot_root", syscall.EPERM},
	{161, "chroot", syscall.EPERM}, {442, "mount_setattr", syscall.EPERM}, {429, "move_mount", syscall.EPERM},
	{428, "open_tree", syscall.EPERM}, {430, "fsopen", syscall.EPERM}, {431, "fsconfig", syscall.EPERM},
	{432, "fsmount", syscall.EPERM}, {433, "fspick", syscall.EPERM},
	// Namespaces: a new user namespace hands back a full capability set inside it.
	{308, "setns", syscall.EPERM}, {272, "unshare", syscall.EPERM},
	// Whole-machine state: swap, reboot, kernels, modules, accounting, quotas, consoles.
	{167, "swapon", syscall.EPERM}, {168, "swapoff", syscall.EPERM}, {169, "reboot", syscall.EPERM},
	{246, "kexec_load", syscall.EPERM}, {320, "kexec_file_load", syscall.EPERM},
	{175, "init_module", syscall.EPERM}, {313, "finit_module", syscall.EPERM}, {176, "delete_module", syscall.EPERM},
	{163, "acct", syscall.EPERM}, {179, "quotactl", syscall.EPERM}, {443, "quotactl_fd", syscall.EPERM},
	{180, "nfsservctl", syscall.EPERM}, {153, "vhangup", syscall.EPERM}, {103, "syslog", syscall.EPERM},
	{212, "lookup_dcookie", syscall.EPERM}, {172, "iopl", syscall.EPERM}, {173, "ioperm", syscall.EPERM},
	// The clock is the host's: namespace sandboxes share it.
	{164, "settimeofday", syscall.EPERM}, {227, "clock_settime", syscall.EPERM},
	{305, "clock_adjtime", syscall.EPERM}, {159, "adjtimex", syscall.EPERM},
	// Kernel subsystems with a long record of privilege-escalation bugs.
	{321, "bpf", syscall.EPERM}, {250, "keyctl", syscall.EPERM}, {248, "add_key", syscall.EPERM},
	{249, "request_key", syscall.EPERM}, {298, "perf_event_open", syscall.EPERM},
	{323, "userfaultfd", syscall.EPERM}, {300, "fanotify_init", syscall.EPERM},
	{425, "io_uring_setup", syscall.EPERM}, {426, "io_uring_enter", syscall.EPERM}, {427, "io_uring_register", syscall.EPERM},
	// Reading or writing other processes (the agent included).
	{101, "ptrace", syscall.EPERM}, {310, "process_vm_readv", syscall.EPERM},
	{311, "process_vm_writev", syscall.EPERM}, {438, "pidfd_getfd", syscall.EPERM},
	// File handles bypass path-based access checks.
	{304, "open_by_handle_at", syscall.EPERM}, {303, "name_to_handle_at", syscall.EPERM},
	// clone3 passes flags in memory the filter cannot read; ENOSYS makes libc fall back to
	// clone, whose flags we can check.
	{435, "clone3", syscall.ENOSYS},
}

const (
	sysClone       = 56
	sysPersonality = 135
	sysSocket      = 41
	sysSocketpair  = 53

	afUnix       = 1
	afInet       = 2
	afInet6      = 10
	afNetlink    = 16
	netlinkRoute = 0
)

// allowedPersonas: PER_LINUX, UNAME26, PER_LINUX32|UNAME26-style queries (0xffffffff reads).
var allowedPersonas = []uint32{0x0, 0x8, 0x20008, 0xffffffff}

type sockFilter struct {
	Code uint16
	Jt   uint8
	Jf   uint8
	K    uint32
}

func stmt(code uint16, k uint32) sockFilter { return sockFilter{Code: code, K: k} }
func jump(code uint16, k uint32, jt, jf uint8) sockFilter {
	return sockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// buildSeccompProgram returns the classic BPF program; each rule is a compare and a return so
// no jump ever needs more than a few instructions of reach.
func buildSeccompProgram() []sockFilter {
	p := archPrologue()
	for _, r := range denyTable {
		p = append(p, jump(bpfJmp|bpfJeq|bpfK, r.nr, 0, 1), stmt(bpfRet, retErrno|uint32(r.errno)))
	}
	// personality(persona): only the harmless personas; nr still in A.
	p = append(p, jump(bpfJmp|bpfJeq|bpfK, sysPersonality, 0, uint8(len(allowedPersonas)+3)),
		stmt(bpfLd|bpfW|bpfAbs, offArg0Lo))
	for i, v := range allowedPersonas {
		p = append(p, jump(bpfJmp|bpfJeq|bpfK, v, uint8(len(allowedPersonas)-i), 0))
	}
	p = append(p, stmt(bpfRet, retErrno|uint32(syscall.EPERM)), stmt(bpfRet, retAllow))
	// clone(flags): no new namespaces.
	p = append(p, jump(bpfJmp|bpfJeq|bpfK, sysClone, 0, 4),
		stmt(bpfLd|bpfW|bpfAbs, offArg0Lo),
		jump(bpfJmp|bpfJset|bpfK, cloneNewMask, 0, 1),
		stmt(bpfRet, retErrno|uint32(syscall.EPERM)),
		stmt(bpfRet, retAllow))
	p = append(p, socketRules()...)
	return append(p, stmt(bpfRet, retAllow))
}

// buildSocketProgram is the filter of VM guests: only the socket-family allow-list. Root in a
// guest is inside the VM's own kernel, so the namespace deny table has nothing to protect there;
// vsock, however, reaches the host's VMM (Firecracker maps guest ports to host Unix sockets).
func buildSocketProgram() []sockFilter {
	p := archPrologue()
	p = append(p, socketRules()...)
	return append(p, stmt(bpfRet, retAllow))
}

// socketRules allow-lists socket families: AF_UNIX, AF_INET, AF_INET6 and, for getaddrinfo's
// interface query, AF_NETLINK with NETLINK_ROUTE only. Everything else (AF_VSOCK, which ignores
// network namespaces; AF_PACKET; the rarely used families behind many kernel bugs) fails with
// EAFNOSUPPORT, the answer of a kernel built without it, so programs fall back quietly.
// socketpair: AF_UNIX only. Expects the syscall number in A; falls through for other calls.
func socketRules() []sockFilter {
	noFamily := stmt(bpfRet, retErrno|uint32(syscall.EAFNOSUPPORT))
	allow := stmt(bpfRet, retAllow)
	return []sockFilter{
		jump(bpfJmp|bpfJeq|bpfK, sysSocket, 0, 9), // → socketpair check
		stmt(bpfLd|bpfW|bpfAbs, offArg0Lo),
		jump(bpfJmp|bpfJeq|bpfK, afUnix, 6, 0),
		jump(bpfJmp|bpfJeq|bpfK, afInet, 5, 0),
		jump(bpfJmp|bpfJeq|bpfK, afInet6, 4, 0),
		jump(bpfJmp|bpfJeq|bpfK, afNetlink, 0, 2),
		stmt(bpfLd|bpfW|bpfAbs, offArg2Lo),
		jump(bpfJmp|bpfJeq|bpfK, netlinkRoute, 1, 0),
		noFamily,
		allow,
		jump(bpfJmp|bpfJeq|bpfK, sysSocketpair, 0, 4), // → whatever follows
		stmt(bpfLd|bpfW|bpfAbs, offArg0Lo),
		jump(bpfJmp|bpfJeq|bpfK, afUnix, 1, 0),
		noFamily,
		allow,
	}
}

func archPrologue() []sockFilter {
	return []sockFilter{
		stmt(bpfLd|bpfW|bpfAbs, offArch),
		jump(bpfJmp|bpfJeq|bpfK, auditArchX86_64, 1, 0),
		stmt(bpfRet, retKillProcess), // foreign arch: i386 syscall numbers mean other things
		stmt(bpfLd|bpfW|bpfAbs, offNr),
		jump(bpfJmp|bpfJge|bpfK, x32SyscallBit, 0, 1),
		stmt(bpfRet, retErrno|uint32(syscall.ENOSYS)), // x32 ABI: a second number space
	}
}

// installSeccomp loads the namespace filter on every thread at once (TSYNC). no_new_privs must be set.
func installSeccomp() error { return loadFilter(buildSeccompProgram()) }

// installSocketFilter is for the VM agent, after its transport is open: every exec inherits it.
// Without no_new_privs (the guest's setuid programs keep working) the kernel wants CAP_SYS_ADMIN,
// which the VM agent, root in its guest, has.
func installSocketFilter() error { return loadFilter(buildSocketProgram()) }

func loadFilter(prog []sockFilter) error {
	fprog := struct {
		Len    uint16
		_      [6]byte
		Filter *sockFilter
	}{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, e := syscall.RawSyscall(sysSeccomp, seccompSetModeFilter, seccompFilterFlagTsync, uintptr(unsafe.Pointer(&fprog)))
	if e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	if r != 0 {
		return fmt.Errorf("seccomp: thread %d could not be synchronised", r)
	}
	return nil
}
