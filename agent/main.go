// kiln-agent is PID 1 inside every kiln sandbox: it speaks protocol v1 (docs/protocol.md) to
// the host, runs and reaps processes, and moves files.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		log.Printf("kiln-agent: %v", err)
		os.Exit(1)
	}
}

type flags struct {
	transport  string
	setupRoot  string
	diskBytes  int64
	workspace  workspaceFlags
	cpus       string
	nameserver string
	awaitFD    int
	execUID    int
	execGID    int
	init       bool
	zygote     string
	// set by the agent itself when it re-executes after dropping privileges (namespace mode)
	privilegesDropped bool
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("kiln-agent", flag.ContinueOnError)
	fs.StringVar(&f.transport, "transport", "auto", "stdio, unix:PATH (namespace mode), virtio-serial, vsock or auto")
	fs.StringVar(&f.setupRoot, "setup-root", "", "namespace mode: read-only lower layer of the sandbox root")
	fs.Int64Var(&f.diskBytes, "disk-bytes", 1<<30, "size of the writable tmpfs layer (namespace mode)")
	fs.StringVar(&f.workspace.lower, "workspace-lower", "", "namespace mode: read-only lower layer of /workspace (the idmapped project bind)")
	fs.StringVar(&f.workspace.mnt, "workspace-mnt", "", "namespace mode: directory holding upper/ and work/ of /workspace")
	fs.BoolVar(&f.workspace.gitWritable, "workspace-git-writable", false, "namespace mode: leave /workspace/.git writable")
	fs.StringVar(&f.cpus, "cpus", "", "namespace mode: the sandbox's CPUs, e.g. 0-1 (its affinity and /sys/devices/system/cpu)")
	fs.StringVar(&f.nameserver, "nameserver", "", "namespace mode: the IPv4 resolver /etc/resolv.conf names (kiln's, on the sandbox network's gateway)")
	fs.IntVar(&f.awaitFD, "await-fd", -1, "namespace mode: read one byte from this descriptor before serving; end of file (the service died before it recorded the sandbox) ends the sandbox")
	fs.IntVar(&f.execUID, "exec-uid", -1, "default exec uid (default: the agent's uid)")
	fs.IntVar(&f.execGID, "exec-gid", -1, "default exec gid (default: the agent's gid)")
	fs.StringVar(&f.zygote, "zygote", "", `namespace mode: start this interpreter as the runner's zygote, {"argv":[...],"env":{...}} (zygote_linux.go)`)
	fs.BoolVar(&f.init, "init", false, "VM mode: act as PID 1 from the initramfs")
	fs.BoolVar(&f.privilegesDropped, "privileges-dropped", false, "internal: namespace setup done, privileges dropped")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if (f.workspace.lower == "") != (f.workspace.mnt == "") {
		return f, fmt.Errorf("--workspace-lower and --workspace-mnt go together")
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	return f, nil
}

func run() error {
	log.SetFlags(0)
	if len(os.Args) > 1 && os.Args[1] == cleanFdsFlag {
		return execCleanFds(os.Args[2:]) // the host's spawn wrapper, not an agent (fds_linux.go)
	}
	if len(os.Args) > 1 && os.Args[1] == hostMode {
		return runHost(os.Args[2:]) // host-side helpers run by the service (host_linux.go)
	}
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	if f.init {
		// VM mode: set the guest up, then go on as the agent in this same process (PID 1).
		if f, err = runInit(); err != nil {
			return err
		}
	}
	return serveAgent(f)
}

func serveAgent(f flags) (err error) {
	guardPID1()
	cfg.execUID, cfg.execGID = os.Getuid(), os.Getgid()
	if f.execUID >= 0 {
		cfg.execUID = f.execUID
	}
	if f.execGID >= 0 {
		cfg.execGID = f.execGID
	}
	if f.setupRoot != "" {
		// Before pivot_root: the socket's folder is on the old root.
		if f.transport, err = prepareUnixTransport(f.transport); err != nil {
			return fmt.Errorf("namespace setup: %w", err)
		}
		if err := setupNamespaceRoot(f.setupRoot, f.diskBytes, f.workspace, f.cpus, f.nameserver); err != nil {
			return fmt.Errorf("namespace setup: %w", err)
		}
		if f.awaitFD >= 0 {
			if err := awaitGo(f.awaitFD); err != nil {
				return fmt.Errorf("namespace setup: %w", err)
			}
		}
		if f.zygote != "" {
			if err := startZygote(f.zygote, f.diskBytes); err != nil {
				return fmt.Errorf("namespace setup: %w", err)
			}
			keepZygoteAcrossExec()
		}
		// Does not return on success: the agent starts again, unprivileged, with --privileges-dropped.
		return reexecUnprivileged([]string{"--transport", f.transport, "--exec-uid", strconv.Itoa(cfg.execUID), "--exec-gid", strconv.Itoa(cfg.execGID)})
	}
	if f.privilegesDropped {
		if err := confirmUnprivileged(); err != nil {
			return fmt.Errorf("namespace setup: %w", err)
		}
		if err := adoptZygote(); err != nil {
			return fmt.Errorf("namespace setup: %w", err)
		}
		if err := installSeccomp(); err != nil {
			return fmt.Errorf("namespace setup: install seccomp filter: %w", err)
		}
		cfg.namespaceMode = true
	}
	t, err := openTransport(f.transport)
	if err != nil {
		return err
	}
	if os.Getpid() == 1 && !cfg.namespaceMode {
		// A VM guest: the transport (vsock with Firecracker) is open; from here on neither the
		// agent nor any exec can open another vsock or a raw socket (seccomp_linux.go).
		if err := installSocketFilter(); err != nil {
			return fmt.Errorf("install the socket filter: %w", err)
		}
	}
	startReaper()
	go reserveThreads(16) // off the handshake's path; done long before any user code can fork-bomb
	return serveLoop(t)
}

// serveLoop serves connections until the transport has no more. For stdio that is the end of
// the sandbox: everything still running is killed before we exit.
func serveLoop(t Transport) error {
	defer killEverything()
	for {
		c, err := t.Accept()
		if errors.Is(err, errTransportDone) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("transport %s: %w", t.Name(), err)
		}
		if err := serve(c, t.Name()); err != nil {
			log.Printf("kiln-agent: connection ended: %v", err)
		}
	}
}

// guardPID1 keeps sandbox code from killing or inspecting the agent.
//
// Every catchable signal is caught and discarded (pid1Signals) rather than set to SIG_IGN: an
// ignored disposition is inherited across execve, so every exec would start with SIGINT/SIGPIPE
// ignored; caught signals are reset to SIG_DFL in the child. Catching SIGPIPE also turns a write
// to a closed stdout (the host went away) into EPIPE instead of killing the agent.
func guardPID1() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, pid1Signals()...)
	go func() {
		for range ch {
		}
	}()
	// Not dumpable: same-uid sandbox code can neither ptrace us nor open /proc/1/mem.
	if err := prctl(syscall.PR_SET_DUMPABLE, 0); err != nil {
		log.Printf("kiln-agent: PR_SET_DUMPABLE: %v", err)
	}
}

// killEverything runs when the host is gone. Only as PID 1 of a pid namespace is kill(-1)
// confined to the sandbox; elsewhere (tests) the per-connection cancel already killed our trees.
func killEverything() {
	if os.Getpid() == 1 {
		_ = syscall.Kill(-1, syscall.SIGKILL)
	}
}
