package main

// Pseudo-terminals without cgo: /dev/ptmx, unlock with TIOCSPTLCK, name with TIOCGPTN.

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

func ioctl(fd uintptr, req uintptr, arg uintptr) error {
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg)
	if e != 0 {
		return e
	}
	return nil
}

func openPty() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var unlock int32
	if err = ioctl(master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	var n uint32
	if err = ioctl(master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

func setWinsize(f *os.File, sz *ttySize) error {
	ws := struct{ Row, Col, X, Y uint16 }{Row: sz.Rows, Col: sz.Cols}
	return ioctl(f.Fd(), syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws)))
}

// setupPty makes the child a session leader with the pty slave as controlling terminal;
// output comes back on the master as STDOUT only.
func (r *execRun) setupPty(cmd *exec.Cmd) ([]*os.File, error) {
	master, slave, err := openPty()
	if err != nil {
		return nil, err
	}
	if r.req.TTY.Cols > 0 && r.req.TTY.Rows > 0 {
		_ = setWinsize(master, r.req.TTY)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0 // child fd number of the slave (stdin)
	r.pty = master
	r.outputs = []*os.File{master}
	if r.req.Stdin {
		r.stdin = master
	}
	return []*os.File{slave}, nil
}
