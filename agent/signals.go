package main

import (
	"os"
	"strconv"
	"syscall"
)

var signalNames = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGKILL": syscall.SIGKILL, "SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1,
	"SIGUSR2": syscall.SIGUSR2, "SIGSTOP": syscall.SIGSTOP, "SIGCONT": syscall.SIGCONT,
	"SIGTSTP": syscall.SIGTSTP, "SIGWINCH": syscall.SIGWINCH, "SIGALRM": syscall.SIGALRM,
	"SIGPIPE": syscall.SIGPIPE, "SIGABRT": syscall.SIGABRT, "SIGSEGV": syscall.SIGSEGV,
	"SIGBUS": syscall.SIGBUS, "SIGFPE": syscall.SIGFPE, "SIGILL": syscall.SIGILL,
	"SIGTRAP": syscall.SIGTRAP, "SIGSYS": syscall.SIGSYS, "SIGXCPU": syscall.SIGXCPU,
	"SIGXFSZ": syscall.SIGXFSZ, "SIGTTIN": syscall.SIGTTIN, "SIGTTOU": syscall.SIGTTOU,
}

func signalByName(name string) (syscall.Signal, bool) {
	s, ok := signalNames[name]
	return s, ok
}

func signalName(sig syscall.Signal) string {
	for n, s := range signalNames {
		if s == sig {
			return n
		}
	}
	return "SIG" + strconv.Itoa(int(sig))
}

// pid1Signals lists every signal PID 1 catches (and discards) so that sandbox code cannot end it
// with kill: the Go runtime's own default for most of them is to exit (SIGHUP, SIGINT, SIGTERM)
// or crash (SIGQUIT, SIGABRT, SIGILL, SIGTRAP, SIGSYS, SIGSTKFLT, and SIGSEGV, SIGBUS, SIGFPE when
// sent by kill rather than raised by a fault, which still panic as they should). Left out: SIGKILL
// and SIGSTOP (the kernel never delivers them to a namespace's init from inside it), SIGCHLD
// (the reaper's), SIGURG (the runtime's preemption), SIGWINCH and SIGCONT (harmless), and 32-34:
// the runtime reserves them (C library and musl internals), installs no handler and lets no
// Notify install one; they stay SIG_DFL, and the kernel never delivers a SIG_DFL signal to a pid
// namespace's init (or the VM's init) from inside it, so they cannot end PID 1 either.
func pid1Signals() []os.Signal {
	var out []os.Signal
	for s := syscall.Signal(1); s <= 64; s++ {
		switch s {
		case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD, syscall.SIGURG, syscall.SIGWINCH, syscall.SIGCONT, 32, 33, 34:
			continue
		}
		out = append(out, s)
	}
	return out
}
