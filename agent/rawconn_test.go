package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// A socketpair stands in for the virtio port: pollable, non-blocking, with a bounded buffer.
func rawPair(t *testing.T) (*rawConn, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	conn, err := newVMConn(os.NewFile(uintptr(fds[0]), "agent-end"))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := conn.(*rawConn)
	if !ok {
		t.Fatalf("a pollable descriptor should get raw I/O, got %T", conn)
	}
	peer := os.NewFile(uintptr(fds[1]), "host-end")
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func TestRawConnRoundTripAndEOF(t *testing.T) {
	c, peer := rawPair(t)
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := c.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	n, _ = peer.Read(buf)
	if string(buf[:n]) != "reply" {
		t.Fatalf("peer read %q", buf[:n])
	}
	peer.Close()
	if _, err := c.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after the peer hung up: %v, want EOF", err)
	}
}

// A write larger than the socket buffer gets EAGAIN part-way: it must wait in the poller and
// finish once the peer reads, with every byte in order.
func TestRawConnWriteWaitsForRoom(t *testing.T) {
	c, peer := rawPair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
		got <- b
	}()
	n, err := c.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("wrote %d of %d: %v", n, len(want), err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not what was written", len(b))
	}
}

// Close ends a Read that is waiting in the poller (the transport reopens the port afterwards).
func TestRawConnCloseEndsPendingRead(t *testing.T) {
	c, _ := rawPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the pending read returned no error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the pending read")
	}
}

// A descriptor the poller does not have is used as the plain file.
func TestVMConnFallsBackForBlockingDescriptors(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "blocking")
	defer f.Close()
	defer syscall.Close(fds[1])
	conn, err := newVMConn(f)
	if err != nil {
		t.Fatal(err)
	}
	if conn != io.ReadWriteCloser(f) {
		t.Fatalf("got %T, want the *os.File itself", conn)
	}
}
