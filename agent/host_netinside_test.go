package main

import (
	"bytes"
	"fmt"
	"io"
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
	held, err := startRegistered(holder)
	if err != nil {
		t.Skipf("unshare: %v", err)
	}
	defer func() { _ = holder.Process.Kill(); <-held }()
	pid := strconv.Itoa(holder.Process.Pid)
	host := "kvnitest" + strconv.Itoa(os.Getpid()%10000)
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := runReaped("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pid)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ip link add: %v %s", err, out)
		}
		time.Sleep(20 * time.Millisecond) // unshare has not made its namespace yet
	}
	defer func() { _, _ = runReaped("ip", "link", "del", host) }()

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
		b, err := runReaped("nsenter", append([]string{"--net=/proc/" + pid + "/ns/net", "--", "ip"}, args...)...)
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
	if b, _ := runReaped("ip", "-o", "addr", "show", "to", "10.89.0.9"); strings.TrimSpace(b) != "" {
		t.Errorf("the host has the sandbox's address: %s", b)
	}
}

// runReaped is exec's CombinedOutput through the agent's reaper: another test of this package may have
// started it (it reaps every child), so exec.Cmd's own wait would find no child.
func runReaped(name string, args ...string) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = w, w // files: no copying goroutine that only cmd.Wait would wait for
	exit, err := startRegistered(cmd)
	w.Close()
	if err != nil {
		return "", err
	}
	out, _ := io.ReadAll(r)
	if st := (<-exit).status; !st.Exited() || st.ExitStatus() != 0 {
		return string(out), fmt.Errorf("%s: %v", name, st)
	}
	return string(out), nil
}
