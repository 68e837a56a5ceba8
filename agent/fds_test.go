package main

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A descriptor the agent inherited without close-on-exec (here: opened so by the test) must not
// reach an exec's process.
func TestExecGetsNoInheritedDescriptor(t *testing.T) {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0) // no O_CLOEXEC, as a parent may leave one
	must(t, err)
	defer syscall.Close(fd)
	h := newTestHost(t, true)
	r := h.wait(h.open(execReq("/bin/sh", "-c", "ls /proc/self/fd")), 10*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, f := range strings.Fields(string(r.stdout)) {
		if n, _ := strconv.Atoi(f); n > 3 || f == strconv.Itoa(fd) {
			t.Errorf("exec sees descriptor %s (inherited one: %d); all: %q", f, fd, r.stdout)
		}
	}
}

func TestSearchPath(t *testing.T) {
	if p, err := searchPath("sh", ""); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("default PATH: %q %v", p, err)
	}
	if p, err := searchPath("/x/y", ""); err != nil || p != "/x/y" {
		t.Errorf("a path is taken as is: %q %v", p, err)
	}
	if _, err := searchPath("kiln-no-such-program", "/nonexistent"); err == nil {
		t.Error("missing program found")
	}
}
