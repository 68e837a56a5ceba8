package main

// An in-memory host: frames over net.Pipe into serve(), one channel of frames per stream.

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == hostMode {
		// idmap-bind re-executes itself (os.Executable: this test binary) as its mapping's holder.
		if err := runHost(os.Args[2:]); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "kiln-agent-test")
	if err != nil {
		panic(err)
	}
	cfg.root, cfg.workdir = dir, dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type testHost struct {
	t       testing.TB
	conn    io.ReadWriteCloser
	mu      sync.Mutex
	streams map[uint32]chan frame
	next    uint32
	wmu     sync.Mutex
	// holdCredit: the host takes output but hands no credit back (a client that stops reading).
	holdCredit bool
}

func newTestHost(t testing.TB, handshake bool) *testHost {
	a, b := net.Pipe()
	go serve(b, "test")
	return newHostOn(t, a, handshake)
}

// newHostOn drives an agent reachable through rw (in-process or a real process).
func newHostOn(t testing.TB, a io.ReadWriteCloser, handshake bool) *testHost {
	h := &testHost{t: t, conn: a, streams: map[uint32]chan frame{}, next: 1}
	go h.readLoop()
	t.Cleanup(func() { a.Close() })
	if handshake {
		if res, err := h.call(map[string]any{"op": "hello", "versions": []int{protocolVersion}}); err != nil {
			t.Fatalf("hello: %v %v", res, err)
		}
	}
	return h
}

func (h *testHost) readLoop() {
	for {
		f, err := readFrame(h.conn)
		if err != nil {
			return
		}
		switch f.Type {
		case frameStdout, frameStderr, frameData:
			if !h.holdCredit {
				h.grant(f.Stream, frameCost(f))
			}
		}
		h.stream(f.Stream) <- f
	}
}

func (h *testHost) grant(id uint32, n int64) {
	b := []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	h.send(frameWindow, id, b)
}

func (h *testHost) stream(id uint32) chan frame {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.streams[id]
	if ch == nil {
		ch = make(chan frame, 4096)
		h.streams[id] = ch
	}
	return ch
}

func (h *testHost) send(t uint8, id uint32, payload []byte) {
	b, err := encodeFrame(t, id, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if _, err := h.conn.Write(b); err != nil {
		h.t.Errorf("write: %v", err)
	}
}

// open sends a REQUEST on a new stream and returns its id.
func (h *testHost) open(req any) uint32 {
	h.mu.Lock()
	id := h.next
	h.next += 2
	h.mu.Unlock()
	h.stream(id)
	b, _ := json.Marshal(req)
	h.send(frameRequest, id, b)
	return id
}

// reply holds everything a stream produced until RESULT or ERROR.
type reply struct {
	frames []frame
	stdout []byte
	stderr []byte
	data   []byte
	result map[string]any
	err    *opError
	pid    int
}

func (h *testHost) wait(id uint32, timeout time.Duration) reply {
	var r reply
	deadline := time.After(timeout)
	for {
		select {
		case f := <-h.stream(id):
			r.frames = append(r.frames, f)
			switch f.Type {
			case frameStdout:
				r.stdout = append(r.stdout, f.Payload...)
			case frameStderr:
				r.stderr = append(r.stderr, f.Payload...)
			case frameData:
				r.data = append(r.data, f.Payload...)
			case frameEvent:
				var ev struct {
					Event string
					Pid   int
				}
				_ = json.Unmarshal(f.Payload, &ev)
				if ev.Event == "started" {
					r.pid = ev.Pid
				}
			case frameResult:
				_ = json.Unmarshal(f.Payload, &r.result)
				return r
			case frameError:
				r.err = &opError{}
				_ = json.Unmarshal(f.Payload, r.err)
				return r
			}
		case <-deadline:
			h.t.Fatalf("stream %d: no answer within %v (got %d frames)", id, timeout, len(r.frames))
		}
	}
}

func (h *testHost) call(req any) (map[string]any, *opError) {
	r := h.wait(h.open(req), 10*time.Second)
	return r.result, r.err
}
