package main

// tcp.connect: a TCP connection to a port inside the sandbox (the namespace sandbox's own network
// namespace, or the VM guest), carried over the op's stream. DATA goes both ways, EOF half-closes
// one direction, CANCEL drops the connection. The host reaches a server in the sandbox this way
// without the sandbox having an address of its own, whatever its network policy (docs/ports.md).

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

const tcpDialTimeout = 5 * time.Second

type tcpConnectRequest struct {
	Port int    `json:"port"`
	Host string `json:"host"`
}

// tcpConnectResult counts the bytes of each direction: in is host → sandbox server.
type tcpConnectResult struct {
	BytesIn  int64 `json:"bytesIn"`
	BytesOut int64 `json:"bytesOut"`
}

// address is the loopback address to dial: only the sandbox's own loopback, never an address
// the sandbox could route elsewhere.
func (r tcpConnectRequest) address() (string, error) {
	if r.Port < 1 || r.Port > 65535 {
		return "", newOpError(codeBadRequest, "tcp.connect port must be 1 to 65535 (got %d)", r.Port)
	}
	host := r.Host
	switch host {
	case "":
		host = "127.0.0.1"
	case "127.0.0.1", "::1":
	default:
		return "", newOpError(codeBadRequest, "tcp.connect host must be 127.0.0.1 or ::1 (got %q)", r.Host)
	}
	return net.JoinHostPort(host, strconv.Itoa(r.Port)), nil
}

func opTCPConnect(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req tcpConnectRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "tcp.connect request: %v", err)
	}
	addr, err := req.address()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: tcpDialTimeout}
	nc, err := d.DialContext(s.ctx, "tcp", addr)
	if err != nil {
		return nil, dialError(err, addr, s)
	}
	tc := nc.(*net.TCPConn)
	defer tc.Close()
	// CANCEL or the host's connection ending closes the socket, which ends both copies.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-s.ctx.Done():
			tc.Close()
		case <-finished:
		}
	}()
	_ = c.sendJSON(frameEvent, s.id, map[string]any{"event": "connected"})

	var bytesIn int64
	inDone := make(chan error, 1)
	go func() { inDone <- copyToSandbox(tc, s, &bytesIn) }()
	out := &dataWriter{c: c, s: s}
	_, readErr := io.Copy(out, onlyReader{tc})
	if s.ctx.Err() != nil {
		return nil, newOpError(codeCancelled, "connection to %s cancelled", addr)
	}
	if readErr != nil {
		// The server reset the connection: the host must not take what it got for the whole reply.
		return nil, newOpError(codeConnectionReset, "the connection to %s in the sandbox was reset: %v", addr, readErr)
	}
	if err := sendEOF(c, s); err != nil {
		return nil, err
	}
	// The server's side is over; the host's ends with its EOF (or a CANCEL once it lets go).
	select {
	case <-inDone:
	case <-s.ctx.Done():
		return nil, newOpError(codeCancelled, "connection to %s cancelled", addr)
	}
	return tcpConnectResult{BytesIn: atomic.LoadInt64(&bytesIn), BytesOut: out.bytes}, nil
}

// copyToSandbox writes the host's DATA to the connection; the host's EOF half-closes it. When
// the server stops taking data (it closed its side) the rest of the host's data is dropped, its
// credit handed back, so the host is never left waiting on the window.
func copyToSandbox(tc *net.TCPConn, s *stream, n *int64) error {
	in := &dataReader{s: s}
	buf := make([]byte, 64<<10)
	for {
		k, err := in.Read(buf)
		if k > 0 {
			if _, werr := tc.Write(buf[:k]); werr != nil {
				s.in.discard()
				return werr
			}
			atomic.AddInt64(n, int64(k))
		}
		if err == io.EOF {
			return tc.CloseWrite()
		}
		if err != nil {
			return err
		}
	}
}

// sendEOF tells the host the server closed its side (an EOF costs window like any data frame).
func sendEOF(c *conn, s *stream) error {
	if _, ok := s.out.take(0, s.ctx.Done()); !ok {
		return newOpError(codeCancelled, "transfer cancelled")
	}
	return c.send(frameEOF, s.id, nil)
}

// dialError names what the host maps to "nothing listens on that port".
func dialError(err error, addr string, s *stream) error {
	if s.ctx.Err() != nil {
		return newOpError(codeCancelled, "connection to %s cancelled", addr)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return newOpError(codeConnectionRefused, "nothing listens on %s in the sandbox", addr)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return newOpError(codeConnectFailed, "connecting to %s in the sandbox timed out after %v", addr, tcpDialTimeout)
	}
	return newOpError(codeConnectFailed, "cannot connect to %s in the sandbox: %v", addr, err)
}

// onlyReader hides TCPConn's WriterTo, so io.Copy goes through dataWriter's window-sized writes.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
