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

func seccompData(arch, nr uint32, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], nr)
	binary.LittleEndian.PutUint32(b[4:], arch)
	binary.LittleEndian.PutUint64(b[16:], arg0)
	return b
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
