package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileWriteRead(t *testing.T) {
	h := newTestHost(t, true)
	content := strings.Repeat("kiln", 200000) // 800 KB: several DATA frames
	id := h.open(map[string]any{"op": "file.write", "path": "/fw/sub/main.py", "mode": 0o600, "maxBytes": 1 << 20})
	h.send(frameData, id, []byte(content[:500000]))
	h.send(frameData, id, []byte(content[500000:]))
	h.send(frameEOF, id, nil)
	r := h.wait(id, 10*time.Second)
	if r.err != nil || r.result["bytes"] != float64(len(content)) {
		t.Fatalf("write: %v %v", r.result, r.err)
	}
	st, err := os.Stat(filepath.Join(cfg.root, "fw/sub/main.py"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v %v", st, err)
	}
	r = h.wait(h.open(map[string]any{"op": "file.read", "path": "/fw/sub/main.py", "maxBytes": 1 << 20}), 10*time.Second)
	if r.err != nil || string(r.data) != content {
		t.Fatalf("read back %d bytes, err %v", len(r.data), r.err)
	}
	list, err2 := h.call(map[string]any{"op": "fs.list", "path": "/fw/sub"})
	b, _ := json.Marshal(list["entries"])
	var entries []fsEntry
	_ = json.Unmarshal(b, &entries)
	if err2 != nil || len(entries) != 1 || entries[0].Name != "main.py" || entries[0].Type != "file" || entries[0].Size != 800000 || entries[0].Mode != 0o600 {
		t.Fatalf("fs.list: %s %v", b, err2)
	}
}

func TestFileErrors(t *testing.T) {
	h := newTestHost(t, true)
	must(t, os.WriteFile(filepath.Join(cfg.root, "big.txt"), make([]byte, 100), 0o644))
	os.Remove(filepath.Join(cfg.root, "etclink"))
	must(t, os.Symlink("../../../../../../../etc", filepath.Join(cfg.root, "etclink")))
	cases := []struct {
		name string
		req  map[string]any
		code string
	}{
		{"golden escape", map[string]any{"op": "file.read", "path": "/../etc/passwd", "maxBytes": 10}, codePathEscape},
		{"symlink escape", map[string]any{"op": "file.read", "path": "/etclink/passwd", "maxBytes": 10000}, codePathEscape},
		{"relative", map[string]any{"op": "file.read", "path": "etc/passwd", "maxBytes": 10}, codePathEscape},
		{"too large", map[string]any{"op": "file.read", "path": "/big.txt", "maxBytes": 10}, codeTooLarge},
		{"missing", map[string]any{"op": "file.read", "path": "/nope.txt", "maxBytes": 10}, codeNotFound},
		{"list escape", map[string]any{"op": "fs.list", "path": "/etclink"}, codePathEscape},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.wait(h.open(c.req), 5*time.Second)
			if r.err == nil || r.err.Code != c.code || len(r.data) != 0 {
				t.Fatalf("want %s and no DATA, got %v (%d bytes)", c.code, r.err, len(r.data))
			}
		})
	}
	// The golden error frame's message is what the host documents.
	r := h.wait(h.open(map[string]any{"op": "file.read", "path": "/../etc/passwd", "maxBytes": 10}), 5*time.Second)
	if r.err.Message != "path /../etc/passwd leaves the sandbox" {
		t.Fatalf("message %q", r.err.Message)
	}
	id := h.open(map[string]any{"op": "file.write", "path": "/toolarge.bin", "maxBytes": 10})
	h.send(frameData, id, make([]byte, 11))
	h.send(frameEOF, id, nil)
	if r := h.wait(id, 5*time.Second); r.err == nil || r.err.Code != codeTooLarge {
		t.Fatalf("write over cap: %v", r.err)
	}
	if _, err := os.Stat(filepath.Join(cfg.root, "toolarge.bin")); !os.IsNotExist(err) {
		t.Fatal("partial file left behind")
	}
}
