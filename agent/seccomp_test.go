package main

import (
	"encoding/binary"
	"syscall"
	"testing"
)

// runBPF is a tiny classic-BPF interpreter for the instructions the builder emits; it lets the
// test check the program's decisions, not just its shape.
func runBPF(t *testing.T, prog []sockFilter, data []byte) uint32 {
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case bpfLd | bpfW | bpfAbs:
			a = binary.LittleEndian.Uint32(data[in.K:])
		case bpfRet:
			return in.K
		case bpfJmp | bpfJeq | bpfK, bpfJmp | bpfJge | bpfK, bpfJmp | bpfJset | bpfK:
			var ok bool
			switch in.Code &^ (bpfJmp | bpfK) {
			case bpfJeq:
				ok = a == in.K
			case bpfJge:
				ok = a >= in.K
			case bpfJset:
				ok = a&in.K != 0
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		default:
			t.Fatalf("unexpected instruction %#x at %d", in.Code, pc)
		}
	}
	t.Fatal("program ran off its end")
	return 0
}

func seccompData(arch, nr uint32, arg0 uint64, more ...uint64) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], nr)
	binary.LittleEndian.PutUint32(b[4:], arch)
	binary.LittleEndian.PutUint64(b[16:], arg0)
	for i, a := range more {
		binary.LittleEndian.PutUint64(b[24+8*i:], a)
	}
	return b
}

// socketCases hold for both filters: socket(family, type, protocol), socketpair(family, …).
var socketCases = []struct {
	name   string
	nr     uint32
	family uint64
	proto  uint64
	allow  bool
}{
	{"unix", 41, syscall.AF_UNIX, 0, true},
	{"inet", 41, syscall.AF_INET, 0, true},
	{"inet6", 41, syscall.AF_INET6, 0, true},
	{"inet, junk in the high half the kernel ignores", 41, 1<<32 | syscall.AF_INET, 0, true},
	{"netlink route", 41, syscall.AF_NETLINK, syscall.NETLINK_ROUTE, true},
	{"netlink audit", 41, syscall.AF_NETLINK, syscall.NETLINK_AUDIT, false},
	{"netlink generic", 41, syscall.AF_NETLINK, syscall.NETLINK_GENERIC, false},
	{"vsock", 41, 40, 0, false},
	{"packet", 41, syscall.AF_PACKET, 0, false},
	{"bluetooth", 41, 31, 0, false},
	{"alg", 41, 38, 0, false},
	{"unspec", 41, 0, 0, false},
	{"socketpair unix", 53, syscall.AF_UNIX, 0, true},
	{"socketpair vsock", 53, 40, 0, false},
	{"socketpair inet", 53, syscall.AF_INET, 0, false},
}

func TestSocketFamilies(t *testing.T) {
	for name, prog := range map[string][]sockFilter{"namespace": buildSeccompProgram(), "vm": buildSocketProgram()} {
		for _, c := range socketCases {
			want := retErrno | uint32(syscall.EAFNOSUPPORT)
			if c.allow {
				want = retAllow
			}
			if got := runBPF(t, prog, seccompData(auditArchX86_64, c.nr, c.family, 0, c.proto)); got != want {
				t.Errorf("%s filter, %s: got %#x, want %#x", name, c.name, got, want)
			}
		}
	}
	vm := buildSocketProgram()
	for _, nr := range []uint32{165, 272, 101, 56} { // mount, unshare, ptrace, clone: root's business in a VM
		if got := runBPF(t, vm, seccompData(auditArchX86_64, nr, syscall.CLONE_NEWNS)); got != retAllow {
			t.Errorf("vm filter refuses syscall %d: %#x", nr, got)
		}
	}
}

func TestSeccompProgram(t *testing.T) {
	prog := buildSeccompProgram()
	if len(prog) > 4096 || prog[len(prog)-1] != stmt(bpfRet, retAllow) {
		t.Fatalf("program of %d instructions must end in ALLOW", len(prog))
	}
	eperm, enosys := retErrno|uint32(syscall.EPERM), retErrno|uint32(syscall.ENOSYS)
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		arg0 uint64
		want uint32
	}{
		{"read allowed", auditArchX86_64, 0, 0, retAllow},
		{"execve allowed", auditArchX86_64, 59, 0, retAllow},
		{"i386 killed", 0x40000003, 1, 0, retKillProcess},
		{"x32 refused", auditArchX86_64, x32SyscallBit | 165, 0, enosys},
		{"mount", auditArchX86_64, 165, 0, eperm},
		{"unshare", auditArchX86_64, 272, 0, eperm},
		{"ptrace", auditArchX86_64, 101, 0, eperm},
		{"bpf", auditArchX86_64, 321, 0, eperm},
		{"fsopen", auditArchX86_64, 430, 0, eperm},
		{"clone3 falls back", auditArchX86_64, 435, 0, enosys},
		{"fork-style clone", auditArchX86_64, 56, uint64(syscall.SIGCHLD) | syscall.CLONE_VM | syscall.CLONE_VFORK, retAllow},
		{"thread clone", auditArchX86_64, 56, syscall.CLONE_VM | syscall.CLONE_FS | syscall.CLONE_FILES | syscall.CLONE_SIGHAND | syscall.CLONE_THREAD, retAllow},
		{"clone NEWUSER", auditArchX86_64, 56, syscall.CLONE_NEWUSER | uint64(syscall.SIGCHLD), eperm},
		{"clone NEWNS", auditArchX86_64, 56, syscall.CLONE_NEWNS, eperm},
		{"socket after clone rules", auditArchX86_64, 41, 40, retErrno | uint32(syscall.EAFNOSUPPORT)},
		{"personality query", auditArchX86_64, 135, 0xffffffff, retAllow},
		{"personality linux", auditArchX86_64, 135, 0, retAllow},
		{"personality other", auditArchX86_64, 135, 0x0040000, eperm},
	}
	for _, c := range cases {
		if got := runBPF(t, prog, seccompData(c.arch, c.nr, c.arg0)); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
	for _, r := range denyTable {
		if got := runBPF(t, prog, seccompData(auditArchX86_64, r.nr, 0)); got != retErrno|uint32(r.errno) {
			t.Errorf("%s (%d): got %#x", r.name, r.nr, got)
		}
	}
}
