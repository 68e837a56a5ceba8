package main

// net.config in a microVM guest: lo up; eth0's address and netmask, its MAC (clones of one
// template snapshot all wake with the template's), up; the default route through the gateway;
// /etc/resolv.conf. Runs before any user code (the host calls it right after the handshake).
// ioctls on an AF_INET socket: no netlink message building, and the socket filter
// (seccomp_linux.go) allows AF_INET.

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

const (
	guestNetIf  = "eth0"
	resolvPath  = "/etc/resolv.conf"
	arphrdEther = 1
	rtfUp       = 0x1
	rtfGateway  = 0x2
)

func opNetConfig(c *conn, s *stream, raw json.RawMessage) (any, error) {
	// Elsewhere (namespace sandboxes, the agent's tests on a host) eth0 is the host's.
	if os.Getpid() != 1 || cfg.namespaceMode {
		return nil, newOpError(codeBadRequest, "net.config is for microVM guests; this agent does not own its network interfaces")
	}
	nc, err := parseNetConfig(raw)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/class/net/" + guestNetIf); err != nil {
		return nil, newOpError(codeNotFound, "the VM has no network device (%s): it was started without a NIC", guestNetIf)
	}
	if err := applyNetConfig(nc); err != nil {
		return nil, newOpError(codeInternal, "net.config: %v", err)
	}
	return map[string]any{}, nil
}

func applyNetConfig(nc netConfig) error {
	if err := configureNIC(nc); err != nil {
		return err
	}
	return writeResolvConf(resolvConf(nc.dns))
}

// configureNIC gives eth0 of the calling thread's network namespace the plan's address, MAC and
// default route, and brings lo and eth0 up.
func configureNIC(nc netConfig) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := setLinkUp(fd, "lo", true); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	addr := ifreq(guestNetIf)
	putSockaddrIn(addr[16:32], nc.address.As4())
	if err := ifIoctl(fd, syscall.SIOCSIFADDR, &addr); err != nil {
		return fmt.Errorf("set the address: %w", err)
	}
	mask := ifreq(guestNetIf)
	putSockaddrIn(mask[16:32], netmask(nc.prefix))
	if err := ifIoctl(fd, syscall.SIOCSIFNETMASK, &mask); err != nil {
		return fmt.Errorf("set the netmask: %w", err)
	}
	// With the address in place, the MAC change (or the link coming up) announces both in a
	// gratuitous ARP (arp_notify, set at boot by nicUp), so the gateway forgets an earlier
	// sandbox's MAC for this address.
	if err := setMAC(fd, nc.mac); err != nil {
		return err
	}
	if err := setLinkUp(fd, guestNetIf, true); err != nil {
		return fmt.Errorf("%s up: %w", guestNetIf, err)
	}
	return setDefaultRoute(fd, nc.gateway.As4())
}

// setMAC changes eth0's MAC while it is up (virtio-net does, through its control queue: a
// clone's eth0 is up since the template's boot); a device that cannot is taken down for it.
func setMAC(fd int, mac [6]byte) error {
	hw := ifreq(guestNetIf)
	*(*uint16)(unsafe.Pointer(&hw[16])) = arphrdEther
	copy(hw[18:24], mac[:])
	err := ifIoctl(fd, syscall.SIOCSIFHWADDR, &hw)
	if err == syscall.EBUSY {
		if err := setLinkUp(fd, guestNetIf, false); err != nil {
			return fmt.Errorf("%s down: %w", guestNetIf, err)
		}
		err = ifIoctl(fd, syscall.SIOCSIFHWADDR, &hw)
	}
	if err != nil {
		return fmt.Errorf("set the MAC: %w", err)
	}
	return nil
}

// nicUp runs at boot (init): eth0, when the VM has a NIC, comes up silent — no IPv6 (kiln's
// plan is IPv4; no link-local address, router solicitations or MLD reach the host), no IPv4
// address — so that net.config in a template's clone changes only what it must, live: under
// emulation each kernel path a clone runs first is translated afresh. resolv.conf is replaced
// by kiln's (no servers until net.config) here too, so the clone's write finds it copied up.
func nicUp() {
	if _, err := os.Stat("/sys/class/net/" + guestNetIf); err != nil {
		return
	}
	conf := "/proc/sys/net/ipv%d/conf/" + guestNetIf + "/%s"
	_ = os.WriteFile(fmt.Sprintf(conf, 6, "disable_ipv6"), []byte("1"), 0)
	_ = os.WriteFile(fmt.Sprintf(conf, 4, "arp_notify"), []byte("1"), 0)
	_ = writeResolvConf(resolvConf(nil))
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	_ = setLinkUp(fd, guestNetIf, true)
}

func ifreq(name string) [40]byte {
	var r [40]byte
	copy(r[:ifNameMax], name)
	return r
}

func putSockaddrIn(b []byte, ip [4]byte) {
	*(*uint16)(unsafe.Pointer(&b[0])) = syscall.AF_INET
	copy(b[4:8], ip[:])
}

func ifIoctl(fd int, req uintptr, r *[40]byte) error {
	return ioctl(uintptr(fd), req, uintptr(unsafe.Pointer(r)))
}

func setLinkUp(fd int, name string, up bool) error {
	r := ifreq(name)
	if err := ifIoctl(fd, syscall.SIOCGIFFLAGS, &r); err != nil {
		return err
	}
	flags := (*uint16)(unsafe.Pointer(&r[16]))
	if (*flags&syscall.IFF_UP != 0) == up {
		return nil
	}
	if up {
		*flags |= syscall.IFF_UP
	} else {
		*flags &^= syscall.IFF_UP
	}
	return ifIoctl(fd, syscall.SIOCSIFFLAGS, &r)
}

// rtentry is struct rtentry of <net/route.h> on 64-bit Linux.
type rtentry struct {
	pad1    uint64
	dst     [16]byte
	gateway [16]byte
	genmask [16]byte
	flags   uint16
	pad2    int16
	pad3    uint64
	pad4    uintptr
	metric  int16
	dev     *byte
	mtu     uint64
	window  uint64
	irtt    uint16
}

// setDefaultRoute replaces any default route (a second net.config, a restored snapshot) with one
// through gw on eth0.
func setDefaultRoute(fd int, gw [4]byte) error {
	dev := append([]byte(guestNetIf), 0)
	var del rtentry
	putSockaddrIn(del.dst[:], [4]byte{})
	putSockaddrIn(del.genmask[:], [4]byte{})
	del.flags = rtfUp
	for {
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCDELRT, uintptr(unsafe.Pointer(&del)))
		if e == syscall.ESRCH {
			break
		}
		if e != 0 {
			return fmt.Errorf("remove the old default route: %w", e)
		}
	}
	rt := rtentry{flags: rtfUp | rtfGateway, dev: &dev[0]}
	putSockaddrIn(rt.dst[:], [4]byte{})
	putSockaddrIn(rt.genmask[:], [4]byte{})
	putSockaddrIn(rt.gateway[:], gw)
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	runtime.KeepAlive(dev)
	if e != 0 {
		return fmt.Errorf("add the default route: %w", e)
	}
	return nil
}

// writeResolvConf replaces /etc/resolv.conf in the guest's writable overlay. A rename replaces a
// pack's symlink (to a systemd-resolved stub that does not run here) instead of writing through
// it; kiln's own (a regular file since nicUp) is rewritten in place, which is cheaper in a clone.
func writeResolvConf(content []byte) error {
	if st, err := os.Lstat(resolvPath); err == nil && st.Mode().IsRegular() {
		f, err := os.OpenFile(resolvPath, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err == nil {
			_, err = f.Write(content)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				return nil
			}
		}
	}
	tmp := resolvPath + ".kiln-tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, resolvPath)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", resolvPath, err)
	}
	return nil
}
