package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The program started ahead reads its file through the pipe once the run arrives; afterwards the
// path holds the run's file as a regular file, as after a cold run.
func TestPrestartAdopted(t *testing.T) {
	h := newTestHost(t, true)
	real := filepath.Join(cfg.root, "pa/main.txt")
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	res, e := h.call(map[string]any{"op": "prestart", "argv": []string{"/bin/cat", real}, "file": "/pa/main.txt"})
	if e != nil || res["pid"] == nil {
		t.Fatalf("prestart: %v %v", res, e)
	}
	pid := int(res["pid"].(float64))
	time.Sleep(50 * time.Millisecond)
	// Bigger than a pipe holds: the feed and the program's reads go side by side.
	data := strings.Repeat("0123456789abcdef", 8192) + "end\n"
	id := h.open(map[string]any{"op": "exec", "argv": []string{"/bin/cat", real}, "files": []map[string]any{{"path": "/pa/main.txt", "data": []byte(data)}}})
	r := h.wait(id, 10*time.Second)
	if string(r.stdout) != data || r.result["exitCode"] != 0.0 {
		t.Fatalf("stdout %d bytes, result %v err %v", len(r.stdout), r.result, r.err)
	}
	if started := startedPid(r); started != pid {
		t.Fatalf("the run started pid %d, not the prestarted %d", started, pid)
	}
	st, err := os.Lstat(real)
	if err != nil || !st.Mode().IsRegular() || st.Size() != int64(len(data)) {
		t.Fatalf("the file after the run: %v %v", st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(real), ".kiln-run-*")); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// Any other request first cancels the waiting program and removes its pipe; an exec that is not
// its run then runs as it would have.
func TestPrestartCancelled(t *testing.T) {
	for _, other := range []map[string]any{
		{"op": "exec", "argv": []string{"/bin/echo", "other"}},
		{"op": "fs.list", "path": "/pc"},
	} {
		h := newTestHost(t, true)
		real := filepath.Join(cfg.root, "pc/main.txt")
		if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
			t.Fatal(err)
		}
		res, e := h.call(map[string]any{"op": "prestart", "argv": []string{"/bin/cat", real}, "file": "/pc/main.txt"})
		if e != nil {
			t.Fatalf("prestart: %v", e)
		}
		pid := int(res["pid"].(float64))
		r := h.wait(h.open(other), 10*time.Second)
		if r.err != nil || (other["op"] == "exec" && string(r.stdout) != "other\n") {
			t.Fatalf("%v: stdout %q err %v", other["op"], r.stdout, r.err)
		}
		if other["op"] == "fs.list" {
			if entries, _ := r.result["entries"].([]any); len(entries) != 0 {
				t.Fatalf("the listing shows %v", entries)
			}
		}
		if _, err := os.Lstat(real); !os.IsNotExist(err) {
			t.Fatalf("%v: the pipe is still there: %v", other["op"], err)
		}
		if syscall.Kill(pid, 0) == nil {
			t.Fatalf("%v: the prestarted program %d still runs", other["op"], pid)
		}
	}
}

func startedPid(r reply) int {
	for _, f := range r.frames {
		var ev struct {
			Event string `json:"event"`
			Pid   int    `json:"pid"`
		}
		if f.Type == frameEvent && json.Unmarshal(f.Payload, &ev) == nil && ev.Event == "started" {
			return ev.Pid
		}
	}
	return -1
}

func TestPipeable(t *testing.T) {
	for _, c := range []struct {
		code string
		want bool
	}{
		{"print(1)\n", true},
		{"", true},
		{"# a comment about encoding\nprint(1)\n", true},
		{"# -*- coding: latin-1 -*-\nprint(1)\n", false},
		{"#!/usr/bin/env python3\n# vim: set fileencoding=utf-8 :\n", false},
		{"print(1)\nprint(2)\n# coding: latin-1\n", true}, // only the first two lines declare one
	} {
		if got := pipeable([]byte(c.code)); got != c.want {
			t.Errorf("pipeable(%q) = %v, want %v", c.code, got, c.want)
		}
	}
}
