package main

// The unix transport of namespace sandboxes that outlive the service: the agent listens on a
// Unix socket the host bound into the sandbox (--transport unix:/.kiln/sock/agent.sock) and
// serves one host connection at a time; after the host goes away (a restart of the service, a
// crash) Accept waits for the next, and the sandbox keeps running meanwhile.
//
// The socket is made in namespace setup, privileged and before pivot_root (which leaves its
// folder unreachable from the sandbox); the re-executed agent finds it as --transport fd:N.

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// listenUnix binds path and returns the listening descriptor, inheritable across the re-exec.
func listenUnix(path string) (int, error) {
	_ = os.Remove(path) // a socket file of an earlier agent in the same folder: never in use
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := syscall.Listen(fd, 4); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", path, err)
	}
	return fd, nil
}

// prepareUnixTransport turns "unix:PATH" into "fd:N" for the re-exec; other names pass through.
func prepareUnixTransport(name string) (string, error) {
	if !strings.HasPrefix(name, "unix:") {
		return name, nil
	}
	path := strings.TrimPrefix(name, "unix:")
	fd, err := listenUnix(path)
	if err != nil {
		return "", err
	}
	return "fd:" + strconv.Itoa(fd), nil
}

type listenerTransport struct{ l net.Listener }

// openListenerTransport takes over the listening descriptor N (close-on-exec from here on, so
// no exec inherits it).
func openListenerTransport(name string) (Transport, error) {
	fdText := strings.TrimPrefix(name, "fd:")
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("bad transport %q (want fd:N, N >= 3)", name)
	}
	f := os.NewFile(uintptr(fd), "agent.sock")
	l, err := net.FileListener(f) // a close-on-exec duplicate
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("listening socket fd %d: %w", fd, err)
	}
	return &listenerTransport{l: l}, nil
}

func (t *listenerTransport) Name() string { return "unix" }

// Accept waits for the next host. An error other than a closed listener (EMFILE, a connection
// reset before it was accepted) is waited out: ending the agent would end the sandbox.
func (t *listenerTransport) Accept() (io.ReadWriteCloser, error) {
	for {
		c, err := t.l.Accept()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, errTransportDone
		}
		log.Printf("kiln-agent: accept: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
}
