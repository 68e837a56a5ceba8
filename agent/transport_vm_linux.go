// OWNED BY THE VM BACKEND ENGINEER (src/backends/qemu, src/vmimage). Agent-core changes go
// through them.
//
// VM transports: the virtio-serial port named "ctl" (QEMU) and AF_VSOCK port 1024 (Firecracker's
// hybrid vsock). One host client at a time; after the host goes away, Accept waits for the next.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	ctlPortName     = "ctl"
	vsockPort       = 1024
	afVsock         = 40
	vmaddrCidAny    = 0xFFFFFFFF
	virtioIDConsole = "0x0003"
	virtioIDVsock   = "0x0013"
	// The console driver announces ports asynchronously after it probes: give it this long.
	portAppearTimeout = 5 * time.Second
)

// openVMTransport opens "virtio-serial", "vsock", or "auto" (whichever virtio device the VM has).
func openVMTransport(name string) (Transport, error) {
	switch name {
	case "virtio-serial":
		return openSerialTransport()
	case "vsock":
		return openVsockTransport()
	case "auto":
		// Only a kiln guest kernel (src/vmimage/cmdline.ts) means "VM": a namespace sandbox on a
		// host that is itself a VM sees the host's virtio devices in /sys.
		if !strings.Contains(readFileString("/proc/cmdline"), "kiln.disk_mib=") {
			return nil, errors.New("not a kiln microVM")
		}
		switch {
		case hasVirtioDevice(virtioIDConsole):
			return openSerialTransport()
		case hasVirtioDevice(virtioIDVsock):
			return openVsockTransport()
		}
		return nil, errors.New("no virtio console or vsock device")
	}
	return nil, fmt.Errorf("unknown VM transport %q", name)
}

func hasVirtioDevice(id string) bool {
	entries, _ := os.ReadDir("/sys/bus/virtio/devices")
	for _, e := range entries {
		b, err := os.ReadFile("/sys/bus/virtio/devices/" + e.Name() + "/device")
		if err == nil && strings.TrimSpace(string(b)) == id {
			return true
		}
	}
	return false
}

// serialTransport: the port reads 0 bytes and polls as hung up while no host is connected, and
// writes block. The kernel sends SIGIO (O_ASYNC) when the host end connects.
type serialTransport struct {
	path  string
	sigio chan os.Signal
}

func openSerialTransport() (*serialTransport, error) {
	path, err := findCtlPort(portAppearTimeout)
	if err != nil {
		return nil, err
	}
	t := &serialTransport{path: path, sigio: make(chan os.Signal, 1)}
	signal.Notify(t.sigio, syscall.SIGIO)
	return t, nil
}

func (t *serialTransport) Name() string { return "virtio-serial" }

// findCtlPort finds /dev/vportNpM whose sysfs name is "ctl", creating the node if devtmpfs did not.
func findCtlPort(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		entries, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range entries {
			dir := "/sys/class/virtio-ports/" + e.Name()
			name, _ := os.ReadFile(dir + "/name")
			if strings.TrimSpace(string(name)) != ctlPortName {
				continue
			}
			dev := "/dev/" + e.Name()
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
			if err := mknodFromSysfs(dir+"/dev", dev); err != nil {
				return "", err
			}
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port named %q within %s", ctlPortName, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mknodFromSysfs(sysDev, dev string) error {
	b, err := os.ReadFile(sysDev)
	if err != nil {
		return err
	}
	majS, minS, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	maj, err1 := strconv.Atoi(majS)
	min, err2 := strconv.Atoi(minS)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%s: bad device number %q", sysDev, b)
	}
	devnum := (maj&0xfff)<<8 | (min & 0xff) | (min&^0xff)<<12
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o600, devnum); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("mknod %s: %w", dev, err)
	}
	return nil
}

// Accept opens the port and waits until the host end is connected.
func (t *serialTransport) Accept() (io.ReadWriteCloser, error) {
	f, err := os.OpenFile(t.path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := setAsync(f, true); err != nil {
		f.Close()
		return nil, err
	}
	for {
		connected, err := hostConnected(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if connected {
			// While connected the port's events are not needed (a hang-up reads as EOF), and
			// each SIGIO costs a trip through the runtime's signal path: on a template clone that
			// is paid in fresh translation under TCG.
			if err := setAsync(f, false); err != nil {
				f.Close()
				return nil, err
			}
			c, err := newVMConn(f)
			if err != nil {
				f.Close()
				return nil, err
			}
			return c, nil
		}
		// SIGIO says "something changed"; the timeout only guards against a lost signal.
		select {
		case <-t.sigio:
		case <-time.After(time.Second):
		}
	}
}

func (t *serialTransport) Close() error {
	signal.Stop(t.sigio)
	return nil
}

// setAsync turns SIGIO delivery for the port on (owner: this process) or off.
func setAsync(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		if on {
			if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETOWN, uintptr(os.Getpid())); e != 0 {
				opErr = fmt.Errorf("F_SETOWN: %w", e)
				return
			}
		}
		flags, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		if e != 0 {
			opErr = fmt.Errorf("F_GETFL: %w", e)
			return
		}
		if on {
			flags |= syscall.O_ASYNC
		} else {
			flags &^= syscall.O_ASYNC
		}
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFL, flags); e != 0 {
			opErr = fmt.Errorf("F_SETFL O_ASYNC: %w", e)
		}
	})
	if err != nil {
		return err
	}
	return opErr
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// hostConnected: the port polls as hung up exactly while no host end is connected.
func hostConnected(f *os.File) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var connected bool
	var opErr error
	err = rc.Control(func(fd uintptr) {
		p := pollFd{fd: int32(fd), events: 0x4} // POLLOUT
		var ts syscall.Timespec
		_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != 0 && e != syscall.EINTR {
			opErr = fmt.Errorf("ppoll: %w", e)
			return
		}
		connected = p.revents&0x10 == 0 // POLLHUP
	})
	if err != nil {
		return false, err
	}
	return connected, opErr
}

// vsockTransport listens on AF_VSOCK port 1024; Firecracker forwards the host's
// "CONNECT 1024" on its Unix socket here.
type vsockTransport struct {
	ln *os.File
}

func openVsockTransport() (*vsockTransport, error) {
	fd, err := syscall.Socket(afVsock, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_VSOCK socket: %w", err)
	}
	// struct sockaddr_vm { sa_family_t family; u16 reserved1; u32 port; u32 cid; u8 zero[4]; }
	var sa [16]byte
	*(*uint16)(unsafe.Pointer(&sa[0])) = afVsock
	*(*uint32)(unsafe.Pointer(&sa[4])) = vsockPort
	*(*uint32)(unsafe.Pointer(&sa[8])) = vmaddrCidAny
	if _, _, e := syscall.Syscall(syscall.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa))); e != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind vsock port %d: %w", vsockPort, e)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: %w", vsockPort, err)
	}
	return &vsockTransport{ln: os.NewFile(uintptr(fd), "vsock-listener")}, nil
}

func (t *vsockTransport) Name() string { return "vsock" }

func (t *vsockTransport) Accept() (io.ReadWriteCloser, error) {
	rc, err := t.ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var opErr error
	err = rc.Read(func(fd uintptr) bool {
		// Raw accept4: syscall.Accept4 rejects the AF_VSOCK peer address it cannot decode.
		r, _, e := syscall.Syscall6(syscall.SYS_ACCEPT4, fd, 0, 0, syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0, 0)
		if e == syscall.EAGAIN {
			return false
		}
		nfd, opErr = int(r), nil
		if e != 0 {
			opErr = fmt.Errorf("accept on vsock port %d: %w", vsockPort, e)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if opErr != nil {
		return nil, opErr
	}
	f := os.NewFile(uintptr(nfd), "vsock")
	c, err := newVMConn(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func (t *vsockTransport) Close() error { return t.ln.Close() }
