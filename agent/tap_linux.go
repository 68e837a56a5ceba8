package main

// The host end of a microVM's network link: `kiln-agent --exec-clean-fds N --tap NAME -- qemu …`
// makes the TAP NAME and leaves it open at descriptor N for the VMM (`-netdev tap,fd=N`). The
// TAP is not persistent: it goes away with the last process holding it, so a VM that stops, a
// failed start and a killed service leave no interface behind.

import (
	"fmt"
	"syscall"
	"unsafe"
)

const (
	ioctlTunSetIff = 0x400454ca // _IOW('T', 202, int)
	iffTap         = 0x0002
	iffNoPi        = 0x1000
	iffVnetHdr     = 0x4000
	// iffTunExcl: fail instead of attaching to an existing TAP of that name (someone else's).
	iffTunExcl = 0x8000
	ifNameMax  = 15 // IFNAMSIZ - 1
)

// checkIfName accepts what `ip link` accepts and kiln uses: 1-15 bytes of letters, digits, '-', '_', '.'.
func checkIfName(name string) error {
	if len(name) == 0 || len(name) > ifNameMax || name == "." || name == ".." {
		return fmt.Errorf("interface name %q must be 1-%d bytes", name, ifNameMax)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("interface name %q may only hold letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// openTapAt creates the TAP `name` (vnet headers on, so the guest's checksum and segmentation
// offloads reach the host) and puts it at descriptor `at`, without close-on-exec.
func openTapAt(name string, at int) error {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr [40]byte
	copy(ifr[:ifNameMax], name)
	*(*uint16)(unsafe.Pointer(&ifr[16])) = iffTap | iffNoPi | iffVnetHdr | iffTunExcl
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), ioctlTunSetIff, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		syscall.Close(fd)
		return fmt.Errorf("create TAP %s: %w", name, e)
	}
	if fd == at {
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, 0); e != 0 {
			return fmt.Errorf("TAP %s: clear close-on-exec: %w", name, e)
		}
		return nil
	}
	defer syscall.Close(fd)
	if err := syscall.Dup3(fd, at, 0); err != nil {
		return fmt.Errorf("TAP %s to descriptor %d: %w", name, at, err)
	}
	return nil
}
