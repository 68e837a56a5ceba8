package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"
)

// listen starts a loopback server that runs serve on each connection; it returns the port.
func listen(t *testing.T, serve func(c *net.TCPConn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c.(*net.TCPConn))
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func hasEvent(r reply, name string) bool {
	for _, f := range r.frames {
		if f.Type == frameEvent {
			var ev struct{ Event string }
			_ = json.Unmarshal(f.Payload, &ev)
			if ev.Event == name {
				return true
			}
		}
	}
	return false
}

func sawEOF(r reply) bool {
	for _, f := range r.frames {
		if f.Type == frameEOF {
			return true
		}
	}
	return false
}

// The host's EOF half-closes the connection; the server's answer after that still arrives whole,
// then the server's close comes back as EOF.
func TestTCPConnectHalfClose(t *testing.T) {
	port := listen(t, func(c *net.TCPConn) {
		defer c.Close()
		got, _ := io.ReadAll(c) // until the host's half-close
		_, _ = c.Write(bytes.ToUpper(got))
	})
	h := newTestHost(t, true)
	payload := bytes.Repeat([]byte("abcdefgh"), 100<<10) // 800 KiB: within one window, many frames
	id := h.open(map[string]any{"op": "tcp.connect", "port": port})
	for off := 0; off < len(payload); off += 64 << 10 {
		end := off + 64<<10
		if end > len(payload) {
			end = len(payload)
		}
		h.send(frameData, id, payload[off:end])
	}
	h.send(frameEOF, id, nil)
	r := h.wait(id, 10*time.Second)
	if r.err != nil {
		t.Fatalf("error: %v", r.err)
	}
	if !bytes.Equal(r.data, bytes.ToUpper(payload)) {
		t.Fatalf("got %d bytes back, want %d", len(r.data), len(payload))
	}
	if !hasEvent(r, "connected") || !sawEOF(r) {
		t.Fatalf("want a connected event and an EOF frame; frames: %d", len(r.frames))
	}
	if r.result["bytesIn"] != float64(len(payload)) || r.result["bytesOut"] != float64(len(payload)) {
		t.Fatalf("result %v", r.result)
	}
}

func TestTCPConnectErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	h := newTestHost(t, true)
	for _, tc := range []struct {
		name string
		req  map[string]any
		code string
	}{
		{"nothing listens", map[string]any{"op": "tcp.connect", "port": closedPort}, codeConnectionRefused},
		{"port 0", map[string]any{"op": "tcp.connect", "port": 0}, codeBadRequest},
		{"port too big", map[string]any{"op": "tcp.connect", "port": 65536}, codeBadRequest},
		{"not loopback", map[string]any{"op": "tcp.connect", "port": 80, "host": "10.0.0.1"}, codeBadRequest},
		{"port not a number", map[string]any{"op": "tcp.connect", "port": "80"}, codeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := h.call(tc.req)
			if e == nil || e.Code != tc.code {
				t.Fatalf("want %s, got %v", tc.code, e)
			}
		})
	}
}

// CANCEL closes the sandbox side of the connection: the server sees its peer go.
func TestTCPConnectCancelClosesConnection(t *testing.T) {
	closed := make(chan struct{})
	port := listen(t, func(c *net.TCPConn) {
		defer c.Close()
		_, _ = c.Write([]byte("hello"))
		_, _ = io.Copy(io.Discard, c)
		close(closed)
	})
	h := newTestHost(t, true)
	id := h.open(map[string]any{"op": "tcp.connect", "port": port})
	deadline := time.After(5 * time.Second)
	for got := 0; got < 5; {
		select {
		case f := <-h.stream(id):
			if f.Type == frameData {
				got += len(f.Payload)
			}
		case <-deadline:
			t.Fatal("no data from the server")
		}
	}
	h.send(frameCancel, id, nil)
	r := h.wait(id, 5*time.Second)
	if r.err == nil || r.err.Code != codeCancelled {
		t.Fatalf("want CANCELLED, got %v %v", r.result, r.err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's connection stayed open after CANCEL")
	}
}

// A server that resets the connection ends the stream with an error, never a RESULT.
func TestTCPConnectServerResetIsAnError(t *testing.T) {
	port := listen(t, func(c *net.TCPConn) {
		_ = c.SetLinger(0) // close with RST
		_, _ = c.Write([]byte("partial"))
		time.Sleep(50 * time.Millisecond)
		c.Close()
	})
	h := newTestHost(t, true)
	id := h.open(map[string]any{"op": "tcp.connect", "port": port})
	h.send(frameData, id, []byte("x"))
	r := h.wait(id, 5*time.Second)
	// Either the reset reaches the reader (CONNECTION_RESET) or the close looks clean and the
	// op waits for the host's EOF; a reset must never pass for a whole reply.
	if r.err == nil {
		t.Fatalf("a reset connection answered RESULT %v", r.result)
	}
	if r.err.Code != codeConnectionReset {
		t.Fatalf("want CONNECTION_RESET, got %v", r.err)
	}
}
