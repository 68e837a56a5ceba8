package main

// Transports hand out connections to the host. stdio has exactly one; VM transports can hand
// out a new one after the host reconnects (e.g. after a snapshot restore).

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

type Transport interface {
	// Accept blocks until the host is connected. errTransportDone means: no more connections.
	Accept() (io.ReadWriteCloser, error)
	Name() string
}

var errTransportDone = errors.New("transport closed")

func openTransport(name string) (Transport, error) {
	switch name {
	case "stdio":
		return newStdioTransport(), nil
	case "virtio-serial", "vsock", "auto":
		t, err := openVMTransport(name)
		if err == nil || name != "auto" {
			return t, err
		}
		return newStdioTransport(), nil // auto: no VM device present
	}
	if strings.HasPrefix(name, "fd:") {
		return openListenerTransport(name)
	}
	return nil, fmt.Errorf("unknown transport %q (want stdio, unix:PATH, virtio-serial, vsock or auto)", name)
}

// stdioTransport: fd 0 carries host→agent, fd 1 agent→host. Only one connection ever: EOF on
// stdin means the host is gone.
type stdioTransport struct {
	used bool
}

func newStdioTransport() *stdioTransport { return &stdioTransport{} }

func (t *stdioTransport) Name() string { return "stdio" }

func (t *stdioTransport) Accept() (io.ReadWriteCloser, error) {
	if t.used {
		return nil, errTransportDone
	}
	t.used = true
	return stdioConn{in: os.Stdin, out: os.Stdout}, nil
}

type stdioConn struct {
	in  *os.File
	out *os.File
}

func (c stdioConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c stdioConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c stdioConn) Close() error {
	c.in.Close()
	return c.out.Close()
}
