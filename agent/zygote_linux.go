package main

// Fork runs (namespace runners, issue 15). A runner sandbox is started with --zygote: before the
// agent drops its privileges it starts the pack's interpreter on zygote.py, which keeps the
// capabilities of the sandbox's user namespace and never runs user code. An exec that is the
// zygote's kind of run (its interpreter on a file, the zygote's environment, no tty, no uid; or,
// as an exec run, any program found in this root) is then not started as a new process of this
// sandbox: the zygote forks it into namespaces of its own (mount, pid, net, ipc, uts, cgroup)
// with a fresh root (an overlay over this sandbox's root, its writes on a tmpfs of its own),
// fresh /dev, /proc and /dev/shm, every privilege dropped and
// this agent's seccomp filter, in an exec cgroup like any exec. Nothing a run does reaches this
// sandbox or a later run: its mounts, processes and loopback end with it. The interpreter's
// start-up (~10 ms of CPU for python) is paid once per runner instead of once per run.
//
// Each run's PID 1 is made ahead of the run (after the previous run, before the next is asked
// for): built, unprivileged and waiting, so a run's request costs a cgroup move, one message and
// the program's fork.
//
// The result says "forked": true. The service reuses a runner only while every exec on it was
// forked; one that ran anything else is deleted after it, as any one-shot sandbox.

import (
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

//go:embed zygote.py
var zygoteScript string

const (
	zygoteFdEnv   = "KILN_ZYGOTE_FD"
	zygoteSpecEnv = "KILN_ZYGOTE_SPEC"
)

// zygoteSpec is --zygote: the interpreter (argv[0] and its options) and the environment its runs
// have (the pack's, as the service sends it with every exec of the pack).
type zygoteSpec struct {
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env"`
	// ExecOnly: the pack's programs are not this interpreter's (node, a shell): every run is an
	// exec run, none is run in the warm interpreter.
	ExecOnly bool `json:"execOnly,omitempty"`
}

// A run the zygote takes is made one of two ways, both in a PID 1 of its own made ahead:
//   - warm: the interpreter's own kind of run (its file, its environment), forked from the warm
//     interpreter and run there, without a start-up of its own;
//   - exec: any other program (another command, another environment, another pack's program):
//     the forked process executes it, as a plain exec would, in the run's fresh namespaces and
//     root. Its start-up is its own; what it saves is the sandbox's.
type runMode int

const (
	notTaken runMode = iota
	warmMode
	execMode
)

type zygote struct {
	spec   zygoteSpec
	env    []string   // spec.environ()
	path   string     // argv[0] resolved
	sockMu sync.Mutex // one request to the zygote at a time
	sock   *os.File
	mu     sync.Mutex // next, dead
	next   *preparedRun
	dead   bool
}

// theZygote is set after the re-exec when the runner has one.
var theZygote *zygote

func parseZygoteSpec(text string) (zygoteSpec, error) {
	var z zygoteSpec
	if err := json.Unmarshal([]byte(text), &z); err != nil {
		return z, fmt.Errorf("--zygote: %w", err)
	}
	if len(z.Argv) == 0 || z.Argv[0] == "" {
		return z, errors.New("--zygote: argv is empty")
	}
	return z, nil
}

// startZygote runs in namespace setup, privileged and after pivot_root: the interpreter keeps this
// process's capabilities in the sandbox's user namespace (uid 0 there). Its socket stays open
// across the re-exec, named in KILN_ZYGOTE_FD.
func startZygote(text string, diskBytes int64) error {
	spec, err := parseZygoteSpec(text)
	if err != nil {
		return err
	}
	env := spec.environ()
	path, err := lookPath(spec.Argv[0], env)
	if err != nil {
		return fmt.Errorf("zygote: %v", err)
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("zygote socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "zygote"), os.NewFile(uintptr(pair[1]), "zygote-child")
	defer theirs.Close()
	cmd := &exec.Cmd{
		Path: path, Args: append(append([]string{}, spec.Argv...), "-c", zygoteScript), Env: env, Dir: "/",
		Stderr: os.Stderr, ExtraFiles: []*os.File{theirs}, SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return fmt.Errorf("zygote: start %s: %w", path, err)
	}
	conf, _ := json.Marshal(map[string]any{
		"diskBytes": diskBytes, "maskedProc": maskedProc, "lastCap": lastCap(),
		"seccomp": hex.EncodeToString(filterBytes(buildSeccompProgram())),
	})
	if _, err := ours.Write(conf); err != nil {
		ours.Close()
		return fmt.Errorf("zygote: configure: %w", err)
	}
	syscall.CloseOnExec(int(ours.Fd())) // cleared just before the re-exec (keepZygoteAcrossExec)
	os.Setenv(zygoteFdEnv, strconv.Itoa(int(ours.Fd())))
	os.Setenv(zygoteSpecEnv, text)
	zygoteKeep = ours
	return nil
}

// zygoteKeep holds the socket until the re-exec, which keeps it open.
var zygoteKeep *os.File

func keepZygoteAcrossExec() {
	if zygoteKeep != nil {
		_, _, _ = syscall.RawSyscall(syscall.SYS_FCNTL, zygoteKeep.Fd(), syscall.F_SETFD, 0)
	}
}

// adoptZygote, in the re-executed agent, takes the socket the setup stage left open.
func adoptZygote() error {
	v, ok := os.LookupEnv(zygoteFdEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(zygoteFdEnv)
	text := os.Getenv(zygoteSpecEnv)
	os.Unsetenv(zygoteSpecEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return fmt.Errorf("%s=%q", zygoteFdEnv, v)
	}
	syscall.CloseOnExec(fd)
	spec, err := parseZygoteSpec(text)
	if err != nil {
		return err
	}
	z := &zygote{spec: spec, env: spec.environ(), sock: os.NewFile(uintptr(fd), "zygote")}
	if z.path, err = lookPath(spec.Argv[0], z.env); err != nil {
		return err
	}
	theZygote = z
	go z.refill() // the first run's PID 1, made while the service is still busy with the create
	return nil
}

// environ is a run's environment without its exec id: what the zygote started with.
func (s zygoteSpec) environ() []string {
	r := execRequest{Env: s.Env}
	env := r.environ(cfg.execUID, 0)
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, execIDEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func filterBytes(prog []sockFilter) []byte {
	n := len(prog) * int(unsafe.Sizeof(sockFilter{}))
	return append([]byte{}, unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), n)...)
}

// takes reports how the zygote can make req, if at all: the default user, no tty, a runner with
// cgroups and its zygote alive; a warm run for its interpreter (same options) on a file with the
// zygote's environment, an exec run for a program found in this root that the request does not
// write itself (whose errors a plain exec reports before it starts).
// The exec run's program is returned with it.
func (z *zygote) takes(req *execRequest) (runMode, string) {
	if z == nil || execCgroups == nil || req.TTY != nil || req.UID != nil || req.GID != nil {
		return notTaken, ""
	}
	if z.isDead() {
		return notTaken, ""
	}
	if !z.spec.ExecOnly && z.warm(req) {
		return warmMode, ""
	}
	if p := z.execPath(req); p != "" {
		return execMode, p
	}
	return notTaken, ""
}

func (z *zygote) warm(req *execRequest) bool {
	n := len(z.spec.Argv)
	if len(req.Argv) <= n || !reflect.DeepEqual(req.Argv[1:n], z.spec.Argv[1:]) || !sameEnv(z.spec.Env, req.Env) {
		return false
	}
	if f := req.Argv[n]; f == "" || f[0] == '-' {
		return false // an option of the interpreter's (-c, -m, -): not a file
	}
	// The same name in the same environment is the same program; another name is looked up.
	if req.Argv[0] != z.spec.Argv[0] {
		if p, err := lookPath(req.Argv[0], z.env); err != nil || p != z.path {
			return false
		}
	}
	return true
}

// execPath is the program an exec run executes, or "" when a plain exec should run req: a name
// not found, a relative path (resolved against the cwd), a file of the request's own, or a cwd
// that is not there (a plain exec tells these apart as errors before anything starts).
func (z *zygote) execPath(req *execRequest) string {
	name := req.Argv[0]
	if strings.Contains(name, "/") && !filepath.IsAbs(name) {
		return ""
	}
	p, err := lookPath(name, req.environ(cfg.execUID, 0))
	if err != nil {
		return ""
	}
	p = filepath.Clean(p)
	if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return ""
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = cfg.workdir
	}
	cwdMade := false // a folder of the request's files: made before the program starts
	for _, f := range req.Files {
		if filepath.Clean(f.Path) == p {
			return ""
		}
		cwdMade = cwdMade || strings.HasPrefix(filepath.Clean(f.Path), filepath.Clean(cwd)+"/")
	}
	if st, err := os.Stat(cwd); !cwdMade && (err != nil || !st.IsDir()) {
		return "" // a plain exec answers CWD_NOT_FOUND
	}
	return p
}

// zygoteRun is one run as the zygote takes it: its environment is the zygote's (takes checked
// that) but for its exec id.
type zygoteRun struct {
	Argv   []string   `json:"argv"`
	File   string     `json:"file,omitempty"`
	ExecID string     `json:"execId"`
	Cwd    string     `json:"cwd"`
	Files  []execFile `json:"files"`
	// Exec runs: the program executed and its whole environment (a plain exec's).
	Exec string   `json:"exec,omitempty"`
	Env  []string `json:"env,omitempty"`
}

// run forks req through the zygote and serves it as any exec (exec_run_linux.go).
func (z *zygote) run(c *conn, s *stream, req *execRequest, mode runMode, program string) (any, error) {
	cwd := req.Cwd
	if cwd == "" {
		cwd = cfg.workdir
	}
	zr := zygoteRun{ExecID: strconv.FormatUint(uint64(s.id), 10), Cwd: cwd}
	if mode == execMode {
		zr.Argv, zr.Exec, zr.Env = req.Argv, program, req.environ(cfg.execUID, s.id)
	} else {
		// argv as the program sees it (sys.argv, sys.orig_argv); file is where its source is.
		zr.Argv = append([]string{req.Argv[0]}, req.Argv[len(z.spec.Argv):]...)
		zr.File = zr.Argv[1]
		if !filepath.IsAbs(zr.File) {
			zr.File = filepath.Join(cwd, zr.File)
		}
		zr.File = filepath.Clean(zr.File)
	}
	files := make([]execFile, len(req.Files))
	for i, f := range req.Files {
		files[i] = f
		if !filepath.IsAbs(f.Path) {
			files[i].Path = filepath.Join(cwd, f.Path)
		}
		files[i].Path = filepath.Clean(files[i].Path)
	}
	zr.Files = files
	msg, err := json.Marshal(zr)
	if err != nil {
		return nil, newOpError(codeInternal, "fork run: %v", err)
	}
	r := &execRun{c: c, req: req, tag: s.id, closing: make(chan struct{})}
	var theirs []*os.File
	closeTheirs := func() {
		for _, f := range theirs {
			f.Close()
		}
		theirs = nil
	}
	defer closeTheirs()
	fail := func(err error) (any, error) {
		closeTheirs()
		r.closeOurs()
		return nil, newOpError(codeForkRefused, "fork run: %v", err)
	}
	if req.Stdin {
		pr, pw, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		theirs, r.stdin = append(theirs, pr), pw
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		theirs = append(theirs, null)
	}
	for i := 0; i < 2; i++ {
		pr, pw, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		r.outputs = append(r.outputs, pr)
		theirs = append(theirs, pw)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	theirs = append(theirs, statusW)
	b, err := z.take()
	if err != nil {
		statusR.Close()
		return fail(err)
	}
	defer b.sock.Close()
	// In the run's cgroup before it has anything of the user's: the program is forked after this.
	cg, err := execCgroups.newExec()
	if err == nil {
		if err = cg.place(b.pid); err != nil {
			cg.kill()
			cg.release()
		}
	}
	if err != nil {
		_ = syscall.Kill(b.pid, syscall.SIGKILL)
		statusR.Close()
		return fail(err)
	}
	r.pid, r.cg = b.pid, cg
	r.signalMain = func(sig syscall.Signal) { signalChildrenOf(cg, b.pid, sig) }
	if err := b.handOver(msg, theirs); err != nil {
		// This PID 1 is lost, not the zygote: the next run gets a new one.
		go z.refill()
		cg.kill()
		cg.release()
		statusR.Close()
		return fail(err)
	}
	closeTheirs()
	exit := make(chan exitInfo, 1)
	r.exit = exit
	started := make(chan error, 1)
	go readRunStatus(statusR, started, exit)
	// The host hears "started" only once the program is forked: a run refused before has shown
	// nothing, and the service runs it elsewhere as if this had not been tried.
	wait := time.NewTimer(forkStartTimeout)
	select {
	case err = <-started:
	case <-wait.C:
		err = fmt.Errorf("the run's PID 1 did not start the program within %v", forkStartTimeout)
	}
	wait.Stop()
	// The next run's PID 1 is made now, after this run (on a runner of one CPU, making it during
	// the run would slow the run), and before the next is asked for.
	defer func() { go z.refill() }()
	if err != nil {
		cg.kill()
		cg.release()
		r.closeOurs()
		return nil, newOpError(codeForkRefused, "fork run: %v", err)
	}
	r.started = time.Now()
	r.attach(s, req)
	res, err := r.finish()
	if err != nil {
		return nil, err
	}
	return forkedResult{res.(execResult), true}, nil
}

type forkedResult struct {
	execResult
	Forked bool `json:"forked"`
}

// preparedRun is a run's PID 1 made ahead by the zygote: its root built, its privileges dropped,
// waiting on sock for its run.
type preparedRun struct {
	pid  int
	sock *os.File
}

// take hands out the prepared PID 1, or has one made now.
func (z *zygote) take() (*preparedRun, error) {
	z.mu.Lock()
	b := z.next
	z.next = nil
	z.mu.Unlock()
	if b != nil {
		return b, nil
	}
	return z.prepare()
}

// refill has the next run's PID 1 made unless one is waiting.
func (z *zygote) refill() {
	z.mu.Lock()
	have := z.next != nil || z.dead
	z.mu.Unlock()
	if have {
		return
	}
	b, err := z.prepare()
	if err != nil {
		return // the next run makes one, and reports why it cannot
	}
	z.mu.Lock()
	if z.next == nil && !z.dead {
		z.next, b = b, nil
	}
	z.mu.Unlock()
	if b != nil {
		b.sock.Close() // B sees its socket end and exits
	}
}

// prepare asks the zygote for a PID 1 and receives its pid and the socket to hand it its run.
func (z *zygote) prepare() (*preparedRun, error) {
	z.sockMu.Lock()
	defer z.sockMu.Unlock()
	if z.isDead() {
		return nil, errors.New("the zygote is gone")
	}
	fd := int(z.sock.Fd())
	if _, err := syscall.Write(fd, []byte("p")); err != nil {
		z.broken()
		return nil, fmt.Errorf("ask the zygote: %w", err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(4))
	for {
		n, oobn, _, _, err := syscall.Recvmsg(fd, buf, oob, syscall.MSG_CMSG_CLOEXEC)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n == 0 {
			z.broken()
			return nil, fmt.Errorf("the zygote ended (%v)", err)
		}
		var fds []int
		if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if got, err := syscall.ParseUnixRights(&m); err == nil {
					fds = append(fds, got...)
				}
			}
		}
		var ans struct {
			Pid   int    `json:"pid"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(buf[:n], &ans); err != nil || ans.Pid <= 0 || len(fds) != 1 {
			for _, f := range fds {
				syscall.Close(f)
			}
			if err == nil && ans.Error != "" {
				return nil, errors.New(ans.Error)
			}
			z.broken()
			return nil, fmt.Errorf("the zygote answered %q", buf[:n])
		}
		return &preparedRun{pid: ans.Pid, sock: os.NewFile(uintptr(fds[0]), "run")}, nil
	}
}

// handOver sends the run and its descriptors to its PID 1. A PID 1 that could not build the run's
// sandbox said why on the socket before it ended.
func (b *preparedRun) handOver(msg []byte, fds []*os.File) error {
	raw := make([]int, len(fds))
	for i, f := range fds {
		raw[i] = int(f.Fd())
	}
	err := syscall.Sendmsg(int(b.sock.Fd()), msg, syscall.UnixRights(raw...), nil, 0)
	if err == nil {
		return nil
	}
	why := make([]byte, 1024)
	if n, _, _, _, rerr := syscall.Recvmsg(int(b.sock.Fd()), why, nil, syscall.MSG_DONTWAIT); rerr == nil && n > 0 {
		return fmt.Errorf("the run's sandbox could not be set up: %s", why[:n])
	}
	return fmt.Errorf("hand the run over: %w", err)
}

func (z *zygote) isDead() bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.dead
}

func (z *zygote) broken() {
	z.mu.Lock()
	z.dead = true
	z.mu.Unlock()
}

// errNotStarted: the run's PID 1 ended before it forked the program (killed before it took the
// run, or its setup failed): nothing of the user's ran, so the run may be made elsewhere.
var errNotStarted = errors.New("the run's PID 1 ended before it started the program")

// forkStartTimeout bounds the wait for a prepared PID 1 to fork the program (it does nothing
// else in between); one that has not is killed and the run refused.
const forkStartTimeout = 5 * time.Second

// readRunStatus turns the run's status lines into its start and its exit: "started" (sent on
// started as nil), then the program's status and usage. A pipe that ends without the status means
// its PID 1 died (killed: timeout, cancel, the sandbox's end); one that ends before "started"
// means the run never began (errNotStarted).
func readRunStatus(f *os.File, started chan<- error, exit chan<- exitInfo) {
	defer f.Close()
	var b []byte
	buf := make([]byte, 256)
	announced := false
	for {
		n, err := f.Read(buf)
		b = append(b, buf[:n]...)
		if !announced && strings.HasPrefix(string(b), "started\n") {
			announced = true
			started <- nil
		}
		if err != nil || len(b) > 1024 {
			break
		}
	}
	rest := string(b)
	if !announced {
		started <- errNotStarted
		exit <- exitInfo{status: syscall.WaitStatus(syscall.SIGKILL)}
		return
	}
	fields := strings.Fields(strings.TrimPrefix(rest, "started\n"))
	var nums [4]int64
	ok := len(fields) == 4
	for i := 0; ok && i < 4; i++ {
		v, err := strconv.ParseInt(fields[i], 10, 64)
		nums[i], ok = v, err == nil
	}
	if !ok {
		exit <- exitInfo{status: syscall.WaitStatus(syscall.SIGKILL)}
		return
	}
	var ex exitInfo
	ex.status = syscall.WaitStatus(nums[0])
	ex.rusage.Utime = syscall.NsecToTimeval(nums[1] * 1000)
	ex.rusage.Stime = syscall.NsecToTimeval(nums[2] * 1000)
	ex.rusage.Maxrss = nums[3]
	exit <- ex
}

// signalChildrenOf signals the run's program (the children of its init, which as PID 1 of its
// namespace takes no signal from here but SIGKILL).
func signalChildrenOf(cg *execCgroup, initPid int, sig syscall.Signal) {
	for _, pid := range cg.procs() {
		if ppid, _, ok := procStat(pid); ok && pid != initPid && ppid == initPid {
			_ = syscall.Kill(pid, sig)
		}
	}
}
