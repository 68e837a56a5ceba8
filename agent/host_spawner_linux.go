package main

// `kiln-agent host spawner`: a long-lived host helper of the namespace backend that starts each
// sandbox's bwrap. The service is a large Node process and child_process forks it for every spawn
// (its page tables copied, then thrown away by the exec), then starts bwrap through the
// fd-cleaning wrapper (a Go runtime start of its own). This small process forks instead (Go's
// vfork-style ForkExec), holds the sandbox's start-up pipes, places the sandbox in its cgroups and
// lets it run, all in one request. Its own inherited descriptors are marked close-on-exec once,
// at start, so a sandbox gets only the descriptors listed below.
//
// Requests, one JSON object per line on stdin:
//
//	{"op":"spawn","id":1,"path":"/usr/bin/bwrap","argv":["bwrap",…],"uid":200001,"gid":200001,
//	 "setsid":true,"await":true,"cgroupProcs":["/sys/fs/cgroup/…/cgroup.procs",…]}
//	{"op":"recorded","id":1}   one byte on the sandbox's --await-fd (the service has its record)
//	{"op":"kill","id":1,"signal":9}   to bwrap, unless it was reaped already
//	{"op":"forget","id":1}     stop reading its stderr (closed: later writes there fail)
//
// The child gets /dev/null as stdin and stdout, a pipe as stderr, bwrap's --info-fd 3 (read here
// for the sandbox's PID 1), --block-fd 4 (written here once that PID is in every cgroup.procs
// listed) and, with "await", the agent's --await-fd 5. Events, one JSON object per line on stdout:
//
//	{"id":1,"ev":"started","pid":bwrapPid,"child":sandboxPid}
//	{"id":1,"ev":"error","message":"…"}      the sandbox did not start (its exit follows)
//	{"id":1,"ev":"stderr","data":"…"} … {"id":1,"ev":"stderr-end"}
//	{"id":1,"ev":"exit","code":0,"signal":0}
//
// At end of input it exits: the await pipes of sandboxes not yet recorded close with it, and those
// agents end (a create cut short by the service's death leaves nothing running), while bwraps in
// sessions of their own (kept sandboxes) run on.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type spawnRequest struct {
	Op          string   `json:"op"`
	ID          uint64   `json:"id"`
	Path        string   `json:"path"`
	Argv        []string `json:"argv"`
	UID         int      `json:"uid"`
	GID         int      `json:"gid"`
	Setsid      bool     `json:"setsid"`
	Await       bool     `json:"await"`
	CgroupProcs []string `json:"cgroupProcs"`
	Signal      int      `json:"signal"`
}

type spawnEvent struct {
	ID      uint64 `json:"id"`
	Ev      string `json:"ev"`
	PID     int    `json:"pid,omitempty"`
	Child   int    `json:"child,omitempty"`
	Message string `json:"message,omitempty"`
	Data    string `json:"data,omitempty"`
	Code    *int   `json:"code,omitempty"`
	Signal  *int   `json:"signal,omitempty"`
}

type spawned struct {
	id        uint64
	pid       int
	reaped    bool
	awaitW    *os.File
	stderrR   *os.File
	forgotten bool
	// Closed when its stderr relay ends and when its start is settled (started or error): its
	// exit is reported after both, so a reader that stops at the exit has all it wrote.
	stderrDone, startDone chan struct{}
}

type spawner struct {
	out   *json.Encoder
	outMu sync.Mutex
	// mu guards procs and byPID; a fork and its registration happen under it, so the reaper never
	// sees a pid it cannot name.
	mu    sync.Mutex
	procs map[uint64]*spawned
	byPID map[int]*spawned
}

var childPidRe = regexp.MustCompile(`"child-pid":\s*(\d+)[,\s}]`)

func serveSpawner(in io.Reader, out io.Writer) error {
	if err := markCloexecFrom(3); err != nil {
		return err
	}
	s := &spawner{out: json.NewEncoder(out), procs: map[uint64]*spawned{}, byPID: map[int]*spawned{}}
	chld := make(chan os.Signal, 16)
	signal.Notify(chld, syscall.SIGCHLD)
	go s.reap(chld)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		var req spawnRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			s.emit(spawnEvent{Ev: "error", Message: fmt.Sprintf("request is not JSON: %v", err)})
			continue
		}
		switch req.Op {
		case "spawn":
			s.spawn(req)
		case "recorded":
			s.recorded(req.ID)
		case "kill":
			s.kill(req.ID, syscall.Signal(req.Signal))
		case "forget":
			s.forget(req.ID)
		default:
			s.emit(spawnEvent{ID: req.ID, Ev: "error", Message: fmt.Sprintf("unknown op %q", req.Op)})
		}
	}
	return sc.Err()
}

func (s *spawner) emit(e spawnEvent) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	_ = s.out.Encode(e)
}

func (s *spawner) spawn(req spawnRequest) {
	fail := func(err error) { s.emit(spawnEvent{ID: req.ID, Ev: "error", Message: err.Error()}) }
	if req.Path == "" || len(req.Argv) == 0 {
		fail(fmt.Errorf("spawn needs a path and an argv"))
		return
	}
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			opened = append(opened, r, w)
		}
		return r, w, err
	}
	null, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		fail(err)
		return
	}
	opened = append(opened, null)
	errR, errW, err1 := pipe()
	infoR, infoW, err2 := pipe()
	blockR, blockW, err3 := pipe()
	var awaitR, awaitW *os.File
	var err4 error
	if req.Await {
		awaitR, awaitW, err4 = pipe()
	}
	for _, e := range []error{err1, err2, err3, err4} {
		if e != nil {
			closeAll()
			fail(e)
			return
		}
	}
	files := []uintptr{null.Fd(), null.Fd(), errW.Fd(), infoW.Fd(), blockR.Fd()}
	if awaitR != nil {
		files = append(files, awaitR.Fd())
	}
	attr := &syscall.ProcAttr{
		Env:   []string{},
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setsid:     req.Setsid,
			Credential: &syscall.Credential{Uid: uint32(req.UID), Gid: uint32(req.GID), Groups: []uint32{}},
		},
	}
	s.mu.Lock()
	pid, err := syscall.ForkExec(req.Path, req.Argv, attr)
	p := &spawned{id: req.ID, pid: pid, awaitW: awaitW, stderrR: errR, stderrDone: make(chan struct{}), startDone: make(chan struct{})}
	if err == nil {
		s.procs[req.ID] = p
		s.byPID[pid] = p
	}
	s.mu.Unlock()
	// The child's ends are the child's now.
	for _, f := range []*os.File{null, errW, infoW, blockR, awaitR} {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		for _, f := range []*os.File{errR, infoR, blockW, awaitW} {
			if f != nil {
				f.Close()
			}
		}
		fail(fmt.Errorf("cannot run %s: %w", req.Path, err))
		return
	}
	stderrDone := p.stderrDone
	go s.relayStderr(p, stderrDone)
	go func() {
		defer close(p.startDone)
		defer blockW.Close()
		// A failure kills before the block pipe closes (its end would let the sandbox run).
		failed := func(child int, err error) {
			if child > 0 {
				_ = syscall.Kill(child, syscall.SIGKILL)
			}
			s.kill(req.ID, syscall.SIGKILL)
			s.emit(spawnEvent{ID: req.ID, Ev: "error", PID: pid, Message: err.Error()})
		}
		child, err := readChildPid(infoR)
		if err != nil {
			// bwrap ended (or broke its output) before starting the sandbox: what it wrote to
			// stderr goes first, so the error can carry it.
			select {
			case <-stderrDone:
			case <-time.After(time.Second):
			}
			failed(0, err)
			return
		}
		for _, f := range req.CgroupProcs {
			if err := os.WriteFile(f, []byte(strconv.Itoa(child)), 0); err != nil {
				failed(child, fmt.Errorf("enter cgroup: %w", err))
				return
			}
		}
		if _, err := blockW.Write([]byte{'x'}); err != nil {
			failed(child, fmt.Errorf("release the sandbox: %w", err))
			return
		}
		s.emit(spawnEvent{ID: req.ID, Ev: "started", PID: pid, Child: child})
	}()
}

// readChildPid reads bwrap's --info-fd output up to the sandbox's PID 1, then drains the rest
// (bwrap closes it after writing) so bwrap never blocks or gets SIGPIPE on it.
func readChildPid(info *os.File) (int, error) {
	var text []byte
	buf := make([]byte, 4096)
	for {
		n, err := info.Read(buf)
		text = append(text, buf[:n]...)
		if m := childPidRe.FindSubmatch(text); m != nil {
			go func() {
				_, _ = io.Copy(io.Discard, info)
				info.Close()
			}()
			return strconv.Atoi(string(m[1]))
		}
		if len(text) > 64*1024 {
			info.Close()
			return 0, fmt.Errorf("bwrap info output is not what kiln expects")
		}
		if err != nil {
			info.Close()
			return 0, fmt.Errorf("bwrap exited before starting the sandbox")
		}
	}
}

func (s *spawner) relayStderr(p *spawned, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 8192)
	for {
		n, err := p.stderrR.Read(buf)
		if n > 0 {
			s.emit(spawnEvent{ID: p.id, Ev: "stderr", Data: string(buf[:n])})
		}
		if err != nil {
			break
		}
	}
	s.mu.Lock()
	if !p.forgotten {
		p.forgotten = true
		p.stderrR.Close()
	}
	s.mu.Unlock()
	s.emit(spawnEvent{ID: p.id, Ev: "stderr-end"})
}

func (s *spawner) recorded(id uint64) {
	s.mu.Lock()
	p := s.procs[id]
	var w *os.File
	if p != nil {
		w, p.awaitW = p.awaitW, nil
	}
	s.mu.Unlock()
	if w != nil {
		_, _ = w.Write([]byte{'g'})
		w.Close()
	}
}

func (s *spawner) forget(id uint64) {
	s.mu.Lock()
	p := s.procs[id]
	if p != nil && !p.forgotten {
		p.forgotten = true
		// As the service did with the child's stderr stream: closed once the sandbox is up.
		p.stderrR.Close()
	}
	s.mu.Unlock()
}

func (s *spawner) kill(id uint64, sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[id]; p != nil && !p.reaped {
		_ = syscall.Kill(p.pid, sig)
	}
}

// emitExit reports an exit after what the child wrote to stderr and after its start's outcome; a
// sandbox still holding bwrap's stderr open (or its info pipe) delays it by a second at most.
func (s *spawner) emitExit(p *spawned, e spawnEvent) {
	late := make(chan struct{})
	t := time.AfterFunc(time.Second, func() { close(late) })
	defer t.Stop()
	for _, ch := range []chan struct{}{p.startDone, p.stderrDone} {
		select {
		case <-ch:
		case <-late:
		}
	}
	s.emit(e)
}

// reap waits for every child that ended (this process has no others) and reports each exit.
func (s *spawner) reap(chld chan os.Signal) {
	for range chld {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			s.mu.Lock()
			p := s.byPID[pid]
			if p != nil {
				p.reaped = true
				delete(s.byPID, pid)
				delete(s.procs, p.id)
				if p.awaitW != nil {
					p.awaitW.Close()
					p.awaitW = nil
				}
			}
			s.mu.Unlock()
			if p == nil {
				continue
			}
			e := spawnEvent{ID: p.id, Ev: "exit"}
			if ws.Signaled() {
				sig := int(ws.Signal())
				e.Signal = &sig
			} else {
				code := ws.ExitStatus()
				e.Code = &code
			}
			go s.emitExit(p, e)
		}
	}
}
