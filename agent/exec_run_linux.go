package main

// The life of one running exec: pipes or pty, output pumps with a cap each (output_cap.go), stdin
// feeding, CONTROL frames, timeout and cancel (both kill the whole tree), then the RESULT.

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

type execRun struct {
	c        *conn
	s        *stream
	req      *execRequest
	pid      int
	tag      uint32      // the exec id in its environment (KILN_EXEC_ID)
	cg       *execCgroup // nil outside a cgroup-capable sandbox (tests): tree kill by group and tag
	exit     <-chan exitInfo
	started  time.Time
	stdin    *os.File   // our end of stdin (pipe write end or pty master), nil when none
	outputs  []*os.File // our read ends
	pty      *os.File
	pumps    sync.WaitGroup
	closing  chan struct{} // closed when the drain window is over: pumps waiting for credit give up
	caps     []*outputCap  // one per entry of outputs, each owned by its pump until pumps are done
	dropped  []int64       // per output, set once the tails are sent
	timedOut bool
	// signalMain, when set, delivers a signal meant for the main process (fork runs: zygote_linux.go).
	signalMain func(syscall.Signal)
}

func startExec(c *conn, s *stream, cmd *exec.Cmd, req *execRequest) (*execRun, error) {
	r, err := launchExec(c, cmd, req, s.id)
	if err != nil {
		return nil, err
	}
	r.attach(s, req)
	return r, nil
}

// launchExec starts the process with its stdio; its output waits in the pipes until attach.
// tag is the stream id its environment carries (tree kill without cgroups finds it by that).
func launchExec(c *conn, cmd *exec.Cmd, req *execRequest, tag uint32) (*execRun, error) {
	if err := markCloexecFrom(3); err != nil { // what we inherited stays ours (fds_linux.go)
		return nil, newOpError(codeInternal, "exec: %v", err)
	}
	r := &execRun{c: c, req: req, tag: tag, closing: make(chan struct{})}
	var childEnds []*os.File
	var err error
	if req.TTY != nil {
		childEnds, err = r.setupPty(cmd)
	} else {
		childEnds, err = r.setupPipes(cmd)
	}
	if err != nil {
		return nil, newOpError(codeInternal, "exec stdio: %v", err)
	}
	r.started = time.Now()
	r.exit, err = r.start(cmd)
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		r.closeOurs()
		if opErr := (*opError)(nil); errors.As(err, &opErr) {
			return nil, err
		}
		return nil, startError(cmd, err)
	}
	r.pid = cmd.Process.Pid
	return r, nil
}

// attach binds a launched process to the stream that runs it: control frames, the started
// event, stdin, and the output pumps under req's cap.
func (r *execRun) attach(s *stream, req *execRequest) {
	r.s, r.req = s, req
	s.mu.Lock()
	s.control = r.control
	s.mu.Unlock()
	r.c.sendJSON(frameEvent, s.id, map[string]any{"event": "started", "pid": r.pid})
	go r.feedStdin()
	maxBytes := int64(defaultMaxOutputBytes)
	if req.MaxOutputBytes != nil {
		maxBytes = *req.MaxOutputBytes
	}
	for i, f := range r.outputs {
		r.caps = append(r.caps, newOutputCap(maxBytes))
		r.pumps.Add(1)
		go r.pump(f, outputKinds[i], r.caps[i])
	}
}

// start starts cmd in a cgroup of its own when the sandbox has one, so the whole exec can be
// killed however its processes detach.
func (r *execRun) start(cmd *exec.Cmd) (<-chan exitInfo, error) {
	if execCgroups == nil {
		return startRegistered(cmd)
	}
	cg, err := execCgroups.newExec()
	if err != nil {
		return nil, newOpError(codeInternal, "%v", err)
	}
	exit, err := startInCgroup(cmd, cg)
	if err != nil {
		cg.kill()
		cg.release()
		return nil, err
	}
	r.cg = cg
	return exit, nil
}

// killAll sends sig to every process of the exec: its cgroup, or (without one) its process
// group, descendants and tagged processes.
func (r *execRun) killAll(sig syscall.Signal) {
	if r.cg != nil {
		r.cg.signal(sig)
		return
	}
	killTree(r.pid, r.tag, sig)
}

func (r *execRun) setupPipes(cmd *exec.Cmd) ([]*os.File, error) {
	cmd.SysProcAttr.Setpgid = true
	var child []*os.File
	if r.req.Stdin {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmd.Stdin, r.stdin = pr, pw
		child = append(child, pr)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	r.outputs = []*os.File{outR, errR}
	return append(child, outW, errW), nil
}

// outputKinds are the frame types of outputs[0] and outputs[1] (a pty has only the first).
var outputKinds = []uint8{frameStdout, frameStderr}

// outputNames name them in the truncated event.
var outputNames = []string{"stdout", "stderr"}

// pump forwards one output until EOF (or until finish closes it after the drain window). While
// the head of its cap lasts it reads only as much as the host's window has room for: when the
// host stops taking output, the pipe fills and the program blocks in write(). Past the head,
// output is read without credit into the cap's tail (what does not fit it is dropped).
func (r *execRun) pump(f *os.File, kind uint8, oc *outputCap) {
	defer r.pumps.Done()
	buf := make([]byte, 32<<10)
	for {
		live := oc.live()
		want, reserved := len(buf), 0
		if live {
			n, ok := r.s.out.take(len(buf), r.s.ctx.Done(), r.closing)
			if !ok {
				return
			}
			want, reserved = n, n
		}
		n, err := f.Read(buf[:want])
		sent := 0
		if n > 0 && live {
			if sent = oc.split(buf[:n]); sent > 0 {
				r.c.send(kind, r.s.id, buf[:sent])
			}
		} else if n > 0 {
			oc.keep(buf[:n])
		}
		if reserved > 0 {
			r.s.out.settle(reserved, sent)
		}
		if err != nil {
			return // EOF, EIO from a pty whose slave closed, or closed by finish
		}
	}
}

// feedStdin writes the stream's STDIN frames to the program and hands each frame's credit back
// once written: a program that does not read holds the host's stdin in its window, and only
// there (the connection reader never waits for it). Without stdin, frames are dropped.
func (r *execRun) feedStdin() {
	if r.stdin == nil {
		r.s.in.discard()
		return
	}
	for {
		f, ok := r.s.in.pop(r.s.done)
		if !ok {
			return
		}
		r.handleStdinFrame(f)
		r.s.in.consumed(frameCost(f))
	}
}

func (r *execRun) handleStdinFrame(f frame) {
	if r.stdin == nil {
		return
	}
	switch f.Type {
	case frameStdin:
		_, _ = r.stdin.Write(f.Payload) // EPIPE after exit is expected; keep draining
	case frameEOF:
		if r.pty != nil {
			_, _ = r.stdin.Write([]byte{4}) // ^D: the terminal's end-of-file
		} else {
			r.stdin.Close()
		}
	}
}

type controlMsg struct {
	Signal string   `json:"signal"`
	Tree   bool     `json:"tree"`
	Resize *ttySize `json:"resize"`
}

// control runs on the connection reader; it only sends signals and ioctls, never blocks.
func (r *execRun) control(payload []byte) {
	var m controlMsg
	if json.Unmarshal(payload, &m) != nil {
		return
	}
	if m.Resize != nil && r.pty != nil {
		_ = setWinsize(r.pty, m.Resize)
	}
	if m.Signal == "" {
		return
	}
	sig, ok := signalByName(m.Signal)
	if !ok {
		return
	}
	if m.Tree {
		r.killAll(sig)
		return
	}
	if r.signalMain != nil {
		r.signalMain(sig)
		return
	}
	if syscall.Kill(-r.pid, sig) != nil {
		_ = syscall.Kill(r.pid, sig)
	}
}

// finish waits for the main process (or kills the tree on timeout/cancel), drains output for at
// most drainAfterExit, and builds the result.
func (r *execRun) finish() (any, error) {
	var timeout <-chan time.Time
	if r.req.TimeoutMs > 0 {
		t := time.NewTimer(time.Duration(r.req.TimeoutMs) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	cancelled := false
	var ex exitInfo
	select {
	case ex = <-r.exit:
	case <-timeout:
		r.timedOut = true
		r.killAll(syscall.SIGKILL)
		ex = <-r.exit
	case <-r.s.ctx.Done():
		cancelled = true
		r.killAll(syscall.SIGKILL)
		ex = <-r.exit
	}
	if r.cg != nil {
		r.cg.release()
	}
	duration := msSince(r.started)
	r.drain()
	if cancelled {
		return nil, newOpError(codeCancelled, "exec cancelled; its process tree was killed")
	}
	r.sendTails()
	return r.result(ex, duration), nil
}

// sendTails sends, per output, what its cap kept past the head: announced by EVENT
// {"event":"truncated","stream","droppedBytes"} when bytes were dropped before it. The tails wait
// for the host's window like any output, for at most drainAfterExit (a host that takes nothing
// must still get its RESULT); what cannot be sent by then counts as dropped.
func (r *execRun) sendTails() {
	giveUp := make(chan struct{})
	timer := time.AfterFunc(drainAfterExit, func() { close(giveUp) })
	defer timer.Stop()
	r.dropped = make([]int64, len(r.caps))
	for i, oc := range r.caps {
		tail, dropped := oc.finish()
		if dropped > 0 {
			r.c.sendJSON(frameEvent, r.s.id, map[string]any{"event": "truncated", "stream": outputNames[i], "droppedBytes": dropped})
		}
		for len(tail) > 0 {
			n, ok := r.s.out.take(len(tail), r.s.ctx.Done(), giveUp)
			if !ok {
				dropped += int64(len(tail))
				break
			}
			r.c.send(outputKinds[i], r.s.id, tail[:n])
			tail = tail[n:]
		}
		r.dropped[i] = dropped
	}
}

func (r *execRun) drain() {
	done := make(chan struct{})
	go func() { r.pumps.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainAfterExit):
	}
	close(r.closing)
	r.closeOurs()
	<-done
}

func (r *execRun) closeOurs() {
	for _, f := range r.outputs {
		f.Close()
	}
	if r.stdin != nil {
		r.stdin.Close()
	}
}

func (r *execRun) result(ex exitInfo, duration float64) execResult {
	res := execResult{
		TimedOut: r.timedOut, DurationMs: duration,
		CPUUserMs:       tvMs(ex.rusage.Utime),
		CPUSystemMs:     tvMs(ex.rusage.Stime),
		PeakMemoryBytes: ex.rusage.Maxrss * 1024,
	}
	for i, d := range r.dropped {
		if d > 0 {
			res.OutputTruncated = true
		}
		if i == 0 {
			res.StdoutDroppedBytes = d
		} else {
			res.StderrDroppedBytes = d
		}
	}
	if ex.status.Signaled() {
		name := signalName(ex.status.Signal())
		res.Signal = &name
	} else {
		code := ex.status.ExitStatus()
		res.ExitCode = &code
	}
	return res
}

func tvMs(tv syscall.Timeval) float64 {
	return float64(tv.Sec)*1000 + float64(tv.Usec)/1000
}
