package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// floodStdin sends as much stdin as the initial window allows, in 32 KiB frames, without waiting
// for credit back: a program that never reads keeps all of it.
func floodStdin(h *testHost, id uint32) int {
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	cost, sent := int64(len(chunk)+frameCostBytes), 0
	for used := int64(0); used+cost <= initialWindowBytes; used += cost {
		h.send(frameStdin, id, chunk)
		sent += len(chunk)
	}
	return sent
}

// One exec whose program never reads its stdin, flooded to the window: the connection reader
// must stay free, so a ping and another exec answer at once, and cancel still works.
func TestStdinFloodDoesNotStallTheReader(t *testing.T) {
	h := newTestHost(t, true)
	stuck := h.open(map[string]any{"op": "exec", "argv": []string{"sleep", "60"}, "stdin": true})
	waitStarted(t, h, stuck)
	if sent := floodStdin(h, stuck); sent < 900<<10 {
		t.Fatalf("only %d bytes fit the window", sent)
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		if _, err := h.call(map[string]any{"op": "ping"}); err != nil {
			t.Fatalf("ping: %v", err)
		}
		r := h.wait(h.open(execReq("echo", "other")), 5*time.Second)
		if string(r.stdout) != "other\n" {
			t.Fatalf("other exec: %q %v", r.stdout, r.err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("ping and exec took %v behind a full stdin", d)
		}
	}
	h.send(frameCancel, stuck, nil)
	if r := h.wait(stuck, 5*time.Second); r.err == nil || r.err.Code != codeCancelled {
		t.Fatalf("cancel: %v %v", r.result, r.err)
	}
}

// A host that hands no credit back gets at most one window of output; the program blocks in
// write() instead of the agent reading its pipe dry. Credit then lets the rest through.
func TestOutputWaitsForCredit(t *testing.T) {
	h := newTestHost(t, true)
	h.holdCredit = true
	const total = 8 << 20
	id := h.open(map[string]any{"op": "exec", "argv": []string{"head", "-c", "8388608", "/dev/zero"}, "maxOutputBytes": total})
	waitStarted(t, h, id)
	got := 0
	deadline := time.After(1500 * time.Millisecond)
	for done := false; !done; {
		select {
		case f := <-h.stream(id):
			if f.Type == frameResult || f.Type == frameError {
				t.Fatalf("the exec ended although its output was not taken (%d bytes got): %s", got, f.Payload)
			}
			if f.Type == frameStdout {
				got += len(f.Payload)
			}
		case <-deadline:
			done = true
		}
	}
	if got > initialWindowBytes {
		t.Fatalf("got %d bytes with no credit handed back; the window is %d", got, initialWindowBytes)
	}
	h.grant(id, total+1<<20)
	r := h.wait(id, 20*time.Second)
	if got+len(r.stdout) != total || r.result["exitCode"] != 0.0 {
		t.Fatalf("after credit: %d+%d bytes, result %v err %v", got, len(r.stdout), r.result, r.err)
	}
}

// The same for a file read: DATA waits for credit.
func TestFileReadWaitsForCredit(t *testing.T) {
	h := newTestHost(t, true)
	if r := h.wait(h.open(execReq("/bin/sh", "-c", "head -c 4194304 /dev/zero > "+cfg.root+"/big.bin")), 10*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	h.holdCredit = true
	id := h.open(map[string]any{"op": "file.read", "path": "/big.bin"})
	time.Sleep(700 * time.Millisecond)
	got := 0
	for len(h.stream(id)) > 0 {
		f := <-h.stream(id)
		if f.Type != frameData {
			t.Fatalf("frame 0x%02x before credit: %s", f.Type, f.Payload)
		}
		got += len(f.Payload)
	}
	if got > initialWindowBytes {
		t.Fatalf("got %d bytes with no credit; the window is %d", got, initialWindowBytes)
	}
	h.grant(id, 8<<20)
	r := h.wait(id, 10*time.Second)
	if got+len(r.data) != 4<<20 || r.err != nil {
		t.Fatalf("after credit: %d+%d bytes, err %v", got, len(r.data), r.err)
	}
}

// A host that sends more than the window allows has broken the protocol: the agent drops the
// connection instead of queueing without bound.
func TestWindowOverrunClosesTheConnection(t *testing.T) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- serve(b, "test") }()
	h := newHostOn(t, a, true)
	id := h.open(map[string]any{"op": "exec", "argv": []string{"sleep", "60"}, "stdin": true})
	waitStarted(t, h, id)
	floodStdin(h, id)
	go h.send(frameStdin, id, bytes.Repeat([]byte("y"), 64<<10))
	select {
	case err := <-done:
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("overran")) {
			t.Fatalf("serve ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent kept a connection whose host overran the window")
	}
	_, _ = io.Copy(io.Discard, a)
}

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		payload []byte
		ok      bool
	}{
		{[]byte{0, 0, 0, 1}, true},
		{[]byte{0x7f, 0xff, 0xff, 0xff}, true},
		{[]byte{0, 0, 0, 0}, false},
		{[]byte{0x80, 0, 0, 0}, false},
		{[]byte{0, 1}, false},
		{nil, false},
	} {
		_, err := parseWindow(frame{Type: frameWindow, Payload: tc.payload})
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v", tc.payload, err)
		}
	}
}
