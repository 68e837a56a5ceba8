package main

// net.config: the host's network plan for a microVM guest (docs/protocol.md), checked before any
// of it touches the guest's interfaces.

import (
	"encoding/json"
	"net/netip"
	"strings"
)

// maxNameservers is glibc's MAXNS: further lines in resolv.conf are ignored.
const maxNameservers = 3

type netConfigRequest struct {
	MAC     string   `json:"mac"`
	Address string   `json:"address"`
	Prefix  int      `json:"prefix"`
	Gateway string   `json:"gateway"`
	DNS     []string `json:"dns"`
}

type netConfig struct {
	mac     [6]byte
	address netip.Addr
	prefix  int
	gateway netip.Addr
	dns     []netip.Addr
}

func parseNetConfig(raw json.RawMessage) (netConfig, error) {
	var req netConfigRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return netConfig{}, newOpError(codeBadRequest, "net.config request: %v", err)
	}
	return checkNetConfig(req)
}

func checkNetConfig(req netConfigRequest) (netConfig, error) {
	var c netConfig
	var ok bool
	if c.mac, ok = parseMAC(req.MAC); !ok {
		return c, newOpError(codeBadRequest, "mac %q must be a unicast Ethernet address like 02:00:0a:e7:00:02 (six hex pairs, not all zero, first octet even)", req.MAC)
	}
	addr, err := netip.ParseAddr(req.Address)
	if err != nil || !addr.Is4() {
		return c, newOpError(codeBadRequest, "address %q must be an IPv4 address", req.Address)
	}
	// /31 and /32 would put the gateway outside the link (no route to it without onlink).
	if req.Prefix < 1 || req.Prefix > 30 {
		return c, newOpError(codeBadRequest, "prefix %d must be 1-30", req.Prefix)
	}
	subnet := netip.PrefixFrom(addr, req.Prefix).Masked()
	if addr == subnet.Addr() || addr == broadcast(subnet) {
		return c, newOpError(codeBadRequest, "address %s is the network or broadcast address of %s", addr, subnet)
	}
	gw, err := netip.ParseAddr(req.Gateway)
	if err != nil || !gw.Is4() {
		return c, newOpError(codeBadRequest, "gateway %q must be an IPv4 address", req.Gateway)
	}
	if !subnet.Contains(gw) || gw == addr || gw == subnet.Addr() || gw == broadcast(subnet) {
		return c, newOpError(codeBadRequest, "gateway %s must be another host address of %s", gw, subnet)
	}
	if len(req.DNS) > maxNameservers {
		return c, newOpError(codeBadRequest, "dns names %d servers; resolv.conf takes at most %d", len(req.DNS), maxNameservers)
	}
	for _, s := range req.DNS {
		// IPv4 only: the guest's eth0 has no IPv6 (nicUp).
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return c, newOpError(codeBadRequest, "dns server %q must be an IPv4 address", s)
		}
		c.dns = append(c.dns, a)
	}
	c.address, c.prefix, c.gateway = addr, req.Prefix, gw
	return c, nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// netmask is the prefix as a dotted mask (SIOCSIFNETMASK takes an address).
func netmask(prefix int) [4]byte {
	var m [4]byte
	for i := 0; i < prefix; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func parseMAC(s string) ([6]byte, bool) {
	var mac [6]byte
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return mac, false
	}
	zero := true
	for i, p := range parts {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return mac, false
		}
		mac[i] = hexVal(p[0])<<4 | hexVal(p[1])
		zero = zero && mac[i] == 0
	}
	return mac, !zero && mac[0]&1 == 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// resolvConf is the guest's /etc/resolv.conf for these servers.
func resolvConf(dns []netip.Addr) []byte {
	var b strings.Builder
	b.WriteString("# written by kiln (net.config)\n")
	for _, a := range dns {
		b.WriteString("nameserver " + a.String() + "\n")
	}
	return []byte(b.String())
}
