package main

// The VM transports' connection: the runtime poller waits for readiness, and the reads and writes
// themselves are raw system calls on the non-blocking descriptor.
//
// A file read through os.File enters the scheduler's syscall path, which wakes the sleeping
// sysmon thread. Under software emulation every first-time code path is slow, so sysmon then
// sees the read as a blocked syscall: it hands the processor to another thread, and after 10 ms
// it preempts the reader. On a template clone all of that is guest code translated afresh
// between resume and the hello reply. A raw read of a descriptor that is ready cannot block, so
// nothing has to be handed off.

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

type rawConn struct {
	f    *os.File
	rc   syscall.RawConn
	once sync.Once
}

// newRawConn takes over f, which must be a pollable descriptor (a virtio port, a socket).
func newRawConn(f *os.File) (*rawConn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nbErr error
	if err := rc.Control(func(fd uintptr) { nbErr = syscall.SetNonblock(int(fd), true) }); err != nil {
		return nil, err
	}
	if nbErr != nil {
		return nil, nbErr
	}
	return &rawConn{f: f, rc: rc}, nil
}

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the poller until readable
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &os.PathError{Op: "read", Path: c.f.Name(), Err: errno}
	case n == 0:
		return 0, io.EOF // the host end hung up
	}
	return n, nil
}

func (c *rawConn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		var n int
		var errno syscall.Errno
		err := c.rc.Write(func(fd uintptr) bool {
			for {
				r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written))
				switch e {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false // wait in the poller until writable
				}
				n, errno = int(r), e
				return true
			}
		})
		if err != nil {
			return written, err
		}
		if errno != 0 {
			return written, &os.PathError{Op: "write", Path: c.f.Name(), Err: errno}
		}
		if n == 0 {
			return written, errors.New("write: the transport accepted no bytes")
		}
		written += n
	}
	return written, nil
}

// Close closes the descriptor once, so a reader blocked on the old connection ends.
func (c *rawConn) Close() error {
	var err error
	c.once.Do(func() { err = c.f.Close() })
	return err
}
