package main

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The unix transport as the namespace setup and the re-executed agent use it: unix:PATH becomes
// fd:N, the listener on N accepts one host after another, and N itself is closed (no exec inherits it).
func TestUnixTransportServesOneHostAfterAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	name, err := prepareUnixTransport("unix:" + path)
	if err != nil || !strings.HasPrefix(name, "fd:") {
		t.Fatalf("prepareUnixTransport = %q, %v", name, err)
	}
	tr, err := openTransport(name)
	if err != nil {
		t.Fatal(err)
	}
	fd := strings.TrimPrefix(name, "fd:")
	var st syscall.Stat_t
	if n := atoi(t, fd); syscall.Fstat(n, &st) == nil {
		t.Fatalf("the inherited descriptor %s is still open", fd)
	}
	for i, msg := range []string{"first host", "second host"} {
		go func(m string) {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Error(err)
				return
			}
			c.Write([]byte(m))
			c.Close()
		}(msg)
		c, err := tr.Accept()
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != msg {
			t.Fatalf("connection %d read %q, want %q", i, got, msg)
		}
	}
	if tr.Name() != "unix" {
		t.Fatalf("name %q", tr.Name())
	}
}

func TestUnixTransportRefusesBadNames(t *testing.T) {
	for _, name := range []string{"fd:", "fd:x", "fd:2", "unix"} {
		if _, err := openTransport(name); err == nil {
			t.Errorf("openTransport(%q) succeeded", name)
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(r-'0')
	}
	return n
}
