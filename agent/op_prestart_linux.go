package main

// prestart: a pooled sandbox's warm-up starts the pack's program on a named pipe where its file
// will be, so the program's start-up (interpreter, standard library, site) is done before the
// run arrives and the warm-up is the run instead of a second start. The first exec that is the
// same run (argv, env, cwd, uid, no stdin, no tty, and the file among its files) adopts it: the
// file is written in place as a regular file, as a cold run finds it, then its bytes are fed
// through the pipe the program is blocked opening. Anything else first cancels it: the process
// is killed and the pipe removed, and the request runs as it would have.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type prestartRequest struct {
	execRequest
	// File is where the program's file goes: a pipe until the run, then the run's file.
	File string `json:"file"`
}

type prestarted struct {
	req  execRequest
	path string   // the pipe's path in the sandbox (and the run's file's)
	file string   // the same, resolved
	pipe *os.File // O_PATH handle on the pipe
	run  *execRun
}

var (
	prestartMu sync.Mutex
	pending    *prestarted
)

func opPrestart(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req prestartRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "prestart request: %v", err)
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	if req.Stdin || req.TTY != nil || len(req.Files) > 0 || req.File == "" {
		return nil, newOpError(codeBadRequest, "prestart takes a file and no stdin, tty or files")
	}
	cancelPrestart()
	path := runPath(req.Cwd, req.File)
	file, err := resolve(path)
	if err != nil {
		return nil, err
	}
	if err := asExecUser(func() error { return syscall.Mkfifo(file, 0o600) }); err != nil {
		return nil, newOpError(codeInternal, "prestart: mkfifo %s: %v", req.File, err)
	}
	// A handle that does not open the pipe; /proc/self/fd/N opens its writing end for the run.
	fd, err := syscall.Open(file, oPath|syscall.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(file)
		return nil, newOpError(codeInternal, "prestart: %v", err)
	}
	p := &prestarted{req: req.execRequest, path: path, file: file, pipe: os.NewFile(uintptr(fd), file)}
	cmd, err := req.command(s.id)
	if err == nil {
		p.run, err = launchExec(c, cmd, &p.req, s.id)
	}
	if err != nil {
		p.pipe.Close()
		os.Remove(file)
		return nil, err
	}
	prestartMu.Lock()
	pending = p
	prestartMu.Unlock()
	return map[string]any{"pid": p.run.pid}, nil
}

// runPath is a file's path as the program sees it: relative paths are in cwd.
func runPath(cwd, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	if cwd == "" {
		cwd = cfg.workdir
	}
	return filepath.Join(cwd, p)
}

// cancelPrestart kills a program waiting for its run and removes its pipe.
func cancelPrestart() {
	prestartMu.Lock()
	p := pending
	pending = nil
	prestartMu.Unlock()
	if p != nil {
		p.cancel()
	}
}

func (p *prestarted) cancel() {
	r := p.run
	r.killAll(syscall.SIGKILL)
	<-r.exit
	if r.cg != nil {
		r.cg.release()
	}
	r.closeOurs()
	p.pipe.Close()
	if st, err := os.Lstat(p.file); err == nil && st.Mode()&os.ModeNamedPipe != 0 {
		os.Remove(p.file)
	}
}

// takePrestart hands over the waiting program when req is its run, and cancels it otherwise.
func takePrestart(req *execRequest) *prestarted {
	prestartMu.Lock()
	p := pending
	pending = nil
	prestartMu.Unlock()
	if p == nil {
		return nil
	}
	if p.matches(req) && p.alive() {
		return p
	}
	p.cancel()
	return nil
}

func (p *prestarted) matches(req *execRequest) bool {
	a, b := &p.req, req
	if !reflect.DeepEqual(a.Argv, b.Argv) || !sameEnv(a.Env, b.Env) || runPath(a.Cwd, ".") != runPath(b.Cwd, ".") {
		return false
	}
	if !reflect.DeepEqual(a.UID, b.UID) || !reflect.DeepEqual(a.GID, b.GID) || b.Stdin || b.TTY != nil {
		return false
	}
	i := p.runFile(req)
	return i >= 0 && pipeable(req.Files[i].Data)
}

func sameEnv(a, b map[string]string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// runFile is the index of the request's file at the pipe's path (given as an absolute path, as
// a cold exec would write it), or -1.
func (p *prestarted) runFile(req *execRequest) int {
	for i, f := range req.Files {
		if filepath.IsAbs(f.Path) && filepath.Clean(f.Path) == p.path {
			return i
		}
	}
	return -1
}

// codingLine is a PEP 263 encoding declaration. Python re-opens a file that declares one
// (other than UTF-8) by its descriptor and seeks in it, which a pipe cannot do.
var codingLine = regexp.MustCompile(`^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)`)

// pipeable: whether a program reading data from a pipe reads what it would from the file.
func pipeable(data []byte) bool {
	lines := bytes.SplitN(data, []byte("\n"), 3)
	if len(lines) > 2 {
		lines = lines[:2]
	}
	for _, l := range lines {
		if codingLine.Match(l) {
			return false
		}
	}
	return true
}

func (p *prestarted) alive() bool {
	select {
	case ex := <-p.run.exit:
		// It ended on its own: put its exit back for cancel, which reaps nothing more.
		ch := make(chan exitInfo, 1)
		ch <- ex
		p.run.exit = ch
		return false
	default:
		return true
	}
}

// adopt runs req on the waiting program: the other files are written, the run's file is put in
// place as a regular file, its bytes go through the pipe, and the run goes on as any exec.
func (p *prestarted) adopt(s *stream, req *execRequest) (any, error) {
	i := p.runFile(req)
	f := req.Files[i]
	for j, o := range req.Files {
		if j == i {
			continue
		}
		if err := writeExecFile(o); err != nil {
			p.cancel()
			return nil, err
		}
	}
	// A sibling name, then a rename over the pipe: the program finds the whole file at its path
	// before it can read one byte of it.
	tmp := filepath.Join(filepath.Dir(p.path), ".kiln-run-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := writeExecFile(execFile{Path: tmp, Data: f.Data, Mode: f.Mode}); err != nil {
		p.cancel()
		return nil, err
	}
	tmpFile, err := resolve(tmp)
	if err == nil {
		err = asExecUser(func() error { return os.Rename(tmpFile, p.file) })
	}
	if err != nil {
		os.Remove(tmpFile)
		p.cancel()
		return nil, newOpError(codeInternal, "exec: put %s in place: %v", f.Path, err)
	}
	r := p.run
	fed := make(chan struct{})
	go p.feed(f.Data, fed)
	r.started = time.Now()
	r.attach(s, req)
	res, err := r.finish()
	p.stopFeeding(fed)
	return res, err
}

// feed opens the pipe's writing end (the program is waiting on its reading end) and writes data.
func (p *prestarted) feed(data []byte, fed chan<- struct{}) {
	defer close(fed)
	w, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(p.pipe.Fd())), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	_, _ = w.Write(data) // EPIPE: the program ended before reading it all, as it may
	w.Close()
}

// stopFeeding ends a feed still blocked opening the pipe (the program ended before opening it):
// a reader that comes and goes lets that open return.
func (p *prestarted) stopFeeding(fed <-chan struct{}) {
	for {
		select {
		case <-fed:
			p.pipe.Close()
			return
		case <-time.After(10 * time.Millisecond):
			if r, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(p.pipe.Fd())), os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
				r.Close()
			}
		}
	}
}

func writeExecFile(f execFile) error {
	mode := os.FileMode(0o644)
	if f.Mode != nil {
		mode = os.FileMode(*f.Mode) & 0o7777
	}
	_, err := writeFileFrom(f.Path, mode, bytes.NewReader(f.Data), int64(len(f.Data)))
	return err
}
