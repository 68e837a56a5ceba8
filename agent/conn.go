package main

// One host connection: a reader loop that dispatches frames to streams, and a mutex that keeps
// every outgoing frame whole. Streams run concurrently; losing the connection cancels them all.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"time"
)

// opFunc runs one request. It returns the RESULT payload or an error that becomes ERROR.
type opFunc func(c *conn, s *stream, raw json.RawMessage) (any, error)

var ops = map[string]opFunc{
	"ping":        opPing,
	"exec":        opExec,
	"file.write":  opFileWrite,
	"file.read":   opFileRead,
	"archive.put": opArchivePut,
	"archive.get": opArchiveGet,
	"fs.list":     opFsList,
	"sync":        opSync,
	"ws.scan":     opWorkspaceScan,
	"ws.flush":    opWorkspaceFlush,
	"prestart":    opPrestart,
	"tcp.connect": opTCPConnect,
	"net.config":  opNetConfig,
}

// keepsPrestart: the ops that leave a prestarted program waiting (exec adopts or cancels it
// itself); every other op cancels it first, so nothing sees its pipe.
var keepsPrestart = map[string]bool{"ping": true, "sync": true, "exec": true, "prestart": true, "net.config": true}

type conn struct {
	rw        io.ReadWriteCloser
	transport string
	wmu       sync.Mutex // the only path to rw.Write: frames never interleave
	werr      error

	mu      sync.Mutex
	streams map[uint32]*stream
	hello   bool
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// stream is one request in flight. Inbound DATA/STDIN/EOF go to in (a queue bounded by the
// stream's window: the reader never waits on it); CANCEL, CONTROL and WINDOW are handled out of
// band so they are never stuck behind queued data.
type stream struct {
	id      uint32
	in      *inbox
	out     *outWindow    // credit for STDOUT/STDERR/DATA to the host
	done    chan struct{} // closed when the op has answered; late frames are dropped
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	control func(payload []byte) // set by exec
}

// serve runs the protocol on one connection until it fails, then cancels its streams (killing
// their process trees) and waits for them to finish.
func serve(rw io.ReadWriteCloser, transport string) error {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{rw: rw, transport: transport, streams: map[uint32]*stream{}, ctx: ctx, cancel: cancel}
	err := c.readLoop()
	cancel()
	rw.Close()
	waitTimeout(&c.wg, 5*time.Second)
	return err
}

func (c *conn) readLoop() error {
	for {
		f, err := readFrame(c.rw)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := c.dispatch(f); err != nil {
			return err
		}
	}
}

func (c *conn) dispatch(f frame) error {
	if f.Type == frameRequest {
		return c.startStream(f)
	}
	c.mu.Lock()
	s := c.streams[f.Stream]
	c.mu.Unlock()
	if s == nil {
		return nil // late frame of a finished or cancelled stream: harmless
	}
	switch f.Type {
	case frameCancel:
		s.cancel()
	case frameControl:
		s.mu.Lock()
		ctl := s.control
		s.mu.Unlock()
		if ctl != nil {
			ctl(f.Payload)
		}
	case frameWindow:
		n, err := parseWindow(f)
		if err != nil {
			return err
		}
		s.out.add(n)
	case frameData, frameStdin, frameEOF:
		return s.in.push(f)
	default:
		log.Printf("kiln-agent: ignoring frame type 0x%02x from host on stream %d", f.Type, f.Stream)
	}
	return nil
}

type requestHead struct {
	Op       string `json:"op"`
	Versions []int  `json:"versions"`
	// Sync rides on hello after a snapshot restore (see op_sync_linux.go).
	Sync *syncRequest `json:"sync"`
}

func (c *conn) startStream(f frame) error {
	var head requestHead
	if versions, sync, ok := parseHello(f.Payload); ok {
		head = requestHead{Op: "hello", Versions: versions, Sync: sync}
	} else if err := json.Unmarshal(f.Payload, &head); err != nil {
		c.sendError(f.Stream, newOpError(codeBadRequest, "request is not valid JSON: %v", err))
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.streams[f.Stream]; busy {
		return fmt.Errorf("%w: stream %d reused while still open", errProtocol, f.Stream)
	}
	if head.Op == "hello" {
		c.answerHello(f.Stream, head.Versions, head.Sync)
		return nil
	}
	if !c.hello {
		c.sendError(f.Stream, newOpError(codeHandshakeRequired, "send hello before %q", head.Op))
		return nil
	}
	op := ops[head.Op]
	if op == nil {
		c.sendError(f.Stream, newOpError(codeBadRequest, "unknown op %q", head.Op))
		return nil
	}
	ctx, cancel := context.WithCancel(c.ctx)
	s := &stream{id: f.Stream, in: newInbox(c, f.Stream), out: newOutWindow(), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	c.streams[f.Stream] = s
	c.wg.Add(1)
	go c.runStream(s, op, f.Payload, !keepsPrestart[head.Op])
	return nil
}

func (c *conn) runStream(s *stream, op opFunc, raw json.RawMessage, cancelsPrestart bool) {
	defer c.wg.Done()
	if cancelsPrestart {
		cancelPrestart()
	}
	res, err := runOp(c, s, op, raw)
	c.mu.Lock()
	delete(c.streams, s.id)
	c.mu.Unlock()
	close(s.done)
	s.cancel()
	if err != nil {
		c.sendError(s.id, toOpError(err))
		return
	}
	c.sendJSON(frameResult, s.id, res)
}

// runOp turns a panic in one op into INTERNAL for that stream instead of killing PID 1.
func runOp(c *conn, s *stream, op opFunc, raw json.RawMessage) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = newOpError(codeInternal, "agent bug: %v", p)
		}
	}()
	return op(c, s, raw)
}

func (c *conn) send(t uint8, id uint32, payload []byte) error {
	buf, err := encodeFrame(t, id, payload)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if _, err := c.rw.Write(buf); err != nil {
		c.werr = err
		c.cancel()
		return err
	}
	return nil
}

func (c *conn) sendJSON(t uint8, id uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxJSONBytes {
		return c.sendError(id, newOpError(codeTooLarge, "reply of %d bytes exceeds the JSON limit", len(b)))
	}
	return c.send(t, id, b)
}

func (c *conn) sendError(id uint32, e *opError) error {
	b, _ := json.Marshal(e)
	return c.send(frameError, id, b)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
		log.Printf("kiln-agent: streams still running %v after the connection closed", d)
	}
}
