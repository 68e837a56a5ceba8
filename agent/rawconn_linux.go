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

// newVMConn takes over f. A descriptor the runtime poller has (os sets those non-blocking) gets
// raw I/O; any other is used as the plain file, blocking through the scheduler's syscall path.
func newVMConn(f *os.File) (io.ReadWriteCloser, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var flags uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) { flags, _, errno = syscall.RawSyscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0) }); err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, &os.PathError{Op: "fcntl", Path: f.Name(), Err: errno}
	}
	if flags&syscall.O_NONBLOCK == 0 {
		return f, nil
	}
	return &rawConn{f: f, rc: rc}, nil
}

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) (done bool) {
		n, errno, done = rawIO(syscall.SYS_READ, fd, p)
		return done
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
		err := c.rc.Write(func(fd uintptr) (done bool) {
			n, errno, done = rawIO(syscall.SYS_WRITE, fd, p[written:])
			return done
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

// rawIO is one read or write on a non-blocking descriptor; done=false means "not ready yet: wait
// in the poller".
func rawIO(sysno, fd uintptr, p []byte) (n int, errno syscall.Errno, done bool) {
	for {
		r, _, e := syscall.RawSyscall(sysno, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, 0, false
		}
		return int(r), e, true
	}
}

// Close closes the descriptor once, so a reader blocked on the old connection ends.
func (c *rawConn) Close() error {
	var err error
	c.once.Do(func() { err = c.f.Close() })
	return err
}
