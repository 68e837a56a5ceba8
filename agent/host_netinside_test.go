package main

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A real network namespace (a sleeping `unshare -n`), a veth peer made in it by `ip` as the
// namespace backend does, then net-inside's answer and what `nsenter ip` sees there.
func TestNetInsideConfiguresEth0InAnotherNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	holder := exec.Command("unshare", "-n", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	pid := strconv.Itoa(holder.Process.Pid)
	host := "kvnitest" + strconv.Itoa(os.Getpid()%10000)
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pid).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ip link add: %v %s", err, out)
		}
		time.Sleep(20 * time.Millisecond) // unshare has not made its namespace yet
	}
	defer func() { _ = exec.Command("ip", "link", "del", host).Run() }()

	in := strings.NewReader(`{"id":7,"pid":` + pid + `,"mac":"02:00:0a:59:00:09","address":"10.89.0.9","prefix":16,"gateway":"10.89.0.1"}
{"id":8,"pid":` + pid + `,"mac":"02:00:0a:59:00:09","address":"10.89.0.9","prefix":40,"gateway":"10.89.0.1"}
{"id":9,"pid":999999999,"mac":"02:00:0a:59:00:09","address":"10.89.0.9","prefix":16,"gateway":"10.89.0.1"}
not json
`)
	var out bytes.Buffer
	if err := serveNetInside(in, &out); err != nil {
		t.Fatal(err)
	}
	replies := out.String()
	for _, want := range []string{`{"id":7}`, `prefix 40 must be 1-30`, `"id":9,"error":"the sandbox's network namespace`, `"id":0,"error":"request is not JSON`} {
		if !strings.Contains(replies, want) {
			t.Errorf("replies %q lack %q", replies, want)
		}
	}
	show := func(args ...string) string {
		b, err := exec.Command("nsenter", append([]string{"--net=/proc/" + pid + "/ns/net", "--", "ip"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v %s", args, err, b)
		}
		return string(b)
	}
	if a := show("-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(a, "10.89.0.9/16") {
		t.Errorf("eth0 address: %s", a)
	}
	if l := show("-o", "link", "show", "dev", "eth0"); !strings.Contains(l, "02:00:0a:59:00:09") || !strings.Contains(l, "UP") {
		t.Errorf("eth0 link: %s", l)
	}
	if r := show("-4", "route", "show", "default"); !strings.Contains(r, "via 10.89.0.1 dev eth0") {
		t.Errorf("default route: %s", r)
	}
	// This process's own namespace was never touched: no thread came back from the sandbox's.
	if b, _ := exec.Command("ip", "-o", "addr", "show", "to", "10.89.0.9").CombinedOutput(); strings.TrimSpace(string(b)) != "" {
		t.Errorf("the host has the sandbox's address: %s", b)
	}
}
