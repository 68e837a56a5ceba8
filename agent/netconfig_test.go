package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestCheckNetConfig(t *testing.T) {
	good := netConfigRequest{MAC: "02:6B:00:0a:e7:02", Address: "10.231.0.2", Prefix: 24, Gateway: "10.231.0.1", DNS: []string{"10.231.0.1", "10.231.0.53"}}
	c, err := checkNetConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.mac != [6]byte{0x02, 0x6b, 0, 0x0a, 0xe7, 0x02} || c.address != netip.MustParseAddr("10.231.0.2") || c.prefix != 24 || len(c.dns) != 2 {
		t.Fatalf("parsed %+v", c)
	}
	bad := []struct {
		name string
		edit func(r *netConfigRequest)
		want string
	}{
		{"short mac", func(r *netConfigRequest) { r.MAC = "02:00:00:00:00" }, "mac"},
		{"multicast mac", func(r *netConfigRequest) { r.MAC = "01:00:5e:00:00:01" }, "mac"},
		{"zero mac", func(r *netConfigRequest) { r.MAC = "00:00:00:00:00:00" }, "mac"},
		{"mac with dashes", func(r *netConfigRequest) { r.MAC = "02-00-00-00-00-01" }, "mac"},
		{"mac not hex", func(r *netConfigRequest) { r.MAC = "02:00:00:00:00:0g" }, "mac"},
		{"ipv6 address", func(r *netConfigRequest) { r.Address = "fd00::2" }, "address"},
		{"no address", func(r *netConfigRequest) { r.Address = "" }, "address"},
		{"prefix 0", func(r *netConfigRequest) { r.Prefix = 0 }, "prefix"},
		{"prefix 31", func(r *netConfigRequest) { r.Prefix = 31 }, "prefix"},
		{"network address", func(r *netConfigRequest) { r.Address = "10.231.0.0" }, "network or broadcast"},
		{"broadcast address", func(r *netConfigRequest) { r.Address = "10.231.0.255" }, "network or broadcast"},
		{"gateway elsewhere", func(r *netConfigRequest) { r.Gateway = "10.231.1.1" }, "gateway"},
		{"gateway is the address", func(r *netConfigRequest) { r.Gateway = "10.231.0.2" }, "gateway"},
		{"gateway not ip", func(r *netConfigRequest) { r.Gateway = "gw" }, "gateway"},
		{"four servers", func(r *netConfigRequest) { r.DNS = []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"} }, "at most 3"},
		{"server name", func(r *netConfigRequest) { r.DNS = []string{"dns.example"} }, "dns server"},
		{"ipv6 server", func(r *netConfigRequest) { r.DNS = []string{"fd00::53"} }, "dns server"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			r.DNS = append([]string(nil), good.DNS...)
			tc.edit(&r)
			_, err := checkNetConfig(r)
			oe, ok := err.(*opError)
			if !ok || oe.Code != codeBadRequest || !strings.Contains(oe.Message, tc.want) {
				t.Fatalf("got %v, want BAD_REQUEST mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseNetConfigJSON(t *testing.T) {
	if _, err := parseNetConfig(json.RawMessage(`{"mac":"02:00:00:00:00:01","address":"192.168.5.9","prefix":30,"gateway":"192.168.5.10","dns":[]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := parseNetConfig(json.RawMessage(`{"prefix":"24"}`)); err == nil {
		t.Fatal("a string prefix was taken")
	}
}

func TestNetmaskAndResolvConf(t *testing.T) {
	for prefix, want := range map[int][4]byte{1: {128, 0, 0, 0}, 24: {255, 255, 255, 0}, 30: {255, 255, 255, 252}} {
		if got := netmask(prefix); got != want {
			t.Errorf("netmask(%d) = %v, want %v", prefix, got, want)
		}
	}
	got := string(resolvConf([]netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("10.0.0.54")}))
	if !strings.Contains(got, "nameserver 10.0.0.53\nnameserver 10.0.0.54\n") {
		t.Errorf("resolv.conf %q", got)
	}
}

// On a host (the test agent is not PID 1 of a VM) the op must never touch the host's interfaces.
func TestNetConfigRefusedOutsideAVM(t *testing.T) {
	h := newTestHost(t, true)
	_, err := h.call(map[string]any{"op": "net.config", "mac": "02:00:00:00:00:01", "address": "10.231.0.2", "prefix": 24, "gateway": "10.231.0.1", "dns": []string{}})
	if err == nil || err.Code != codeBadRequest || !strings.Contains(err.Message, "microVM") {
		t.Fatalf("got %v", err)
	}
}

func TestParseCleanFdsArgs(t *testing.T) {
	keep, tap, argv, err := parseCleanFdsArgs([]string{"6", "--tap", "kq0a1b2c3d", "--", "qemu", "-m", "1G"})
	if err != nil || keep != 6 || tap != "kq0a1b2c3d" || strings.Join(argv, " ") != "qemu -m 1G" {
		t.Fatalf("%d %q %q %v", keep, tap, argv, err)
	}
	if keep, tap, argv, err := parseCleanFdsArgs([]string{"3", "--", "sh"}); err != nil || keep != 3 || tap != "" || argv[0] != "sh" {
		t.Fatalf("%d %q %q %v", keep, tap, argv, err)
	}
	for _, args := range [][]string{
		{"3", "sh"},
		{"3", "--tap", "--", "sh"},
		{"3", "--tap", "name-far-too-long", "--", "sh"},
		{"3", "--tap", "bad/name", "--", "sh"},
		{"-1", "--", "sh"},
		{"3", "--"},
	} {
		if _, _, _, err := parseCleanFdsArgs(args); err == nil {
			t.Errorf("%q was accepted", args)
		}
	}
}

// The TAP lands open at the asked descriptor, named as asked, and goes away with its holder.
func TestOpenTapAt(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("creating a TAP needs CAP_NET_ADMIN")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	name := "kqgotest" + strings.ReplaceAll(strings.TrimPrefix(t.Name(), "TestOpenTapAt"), "/", "")
	const at = 57
	if err := openTapAt(name, at); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/sys/class/net/" + name + "/tun_flags"); err != nil {
		closeFd(at)
		t.Fatalf("the TAP is not there: %v", err)
	}
	if err := openTapAt(name, at+1); err == nil {
		closeFd(at + 1)
		t.Error("a second TAP of the same name attached to the first")
	}
	closeFd(at)
	if _, err := os.Stat("/sys/class/net/" + name); err == nil {
		t.Error("the TAP outlived its last descriptor")
	}
}

func closeFd(fd int) { _ = syscall.Close(fd) }
