package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const userfsTestUID = 64101

// userRoot makes a sandbox root the test user can traverse, with a root-only /etc/shadow, and
// points cfg at it with that user as the exec user, as in a VM (agent root, exec user 1000).
func userRoot(t *testing.T) string {
	if os.Getuid() != 0 {
		t.Skip("needs root: the agent must be root for its file ops to switch to the exec user")
	}
	root, err := os.MkdirTemp("", "kiln-userfs")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	must(t, os.Chmod(root, 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "etc/private"), 0o755))
	must(t, os.Chmod(filepath.Join(root, "etc/private"), 0o700))
	must(t, os.WriteFile(filepath.Join(root, "etc/shadow"), []byte("root:secret\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("sandbox\n"), 0o644))
	must(t, os.Mkdir(filepath.Join(root, "workspace"), 0o755))
	must(t, os.Chown(filepath.Join(root, "workspace"), userfsTestUID, userfsTestUID))
	old := cfg
	cfg.root, cfg.execUID, cfg.execGID = root, userfsTestUID, userfsTestUID
	t.Cleanup(func() { cfg = old })
	return root
}

func shadowUnchanged(t *testing.T, root string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc/shadow"))
	st, _ := os.Stat(filepath.Join(root, "etc/shadow"))
	if err != nil || string(b) != "root:secret\n" || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("/etc/shadow was touched: %q %v %v", b, st.Mode(), err)
	}
}

func TestFileOpsActAsExecUser(t *testing.T) {
	root := userRoot(t)
	ws := filepath.Join(root, "workspace")
	must(t, os.Symlink("/etc/shadow", filepath.Join(ws, "report.txt")))
	must(t, os.Symlink("../etc", filepath.Join(ws, "etc")))
	must(t, os.Symlink("/etc/private", filepath.Join(ws, "private")))
	h := newTestHost(t, true)

	id := h.open(map[string]any{"op": "file.write", "path": "/workspace/report.txt"})
	h.send(frameData, id, []byte("root::0:0:99999:7:::\n"))
	h.send(frameEOF, id, nil)
	if r := h.wait(id, 5*time.Second); r.err == nil || r.err.Code != codePermissionDenied || !strings.Contains(r.err.Message, "permission denied") {
		t.Errorf("write through a planted link: %v", r.err)
	}
	if r := h.wait(h.open(map[string]any{"op": "file.read", "path": "/workspace/report.txt"}), 5*time.Second); r.err == nil || len(r.data) != 0 {
		t.Errorf("read through a planted link: %v %q", r.err, r.data)
	}
	r := h.wait(h.open(map[string]any{"op": "archive.get", "path": "/workspace/etc"}), 5*time.Second)
	// What the user may read is archived; what it may not is left out, as an unreadable file always was.
	if names := tarNames(t, r.data); r.err != nil || bytes.Contains(r.data, []byte("secret")) || names != "hostname" {
		t.Errorf("archive of a linked directory: %v, names %q, secret inside: %v", r.err, tarNames(t, r.data), bytes.Contains(r.data, []byte("secret")))
	}
	if _, err := h.call(map[string]any{"op": "fs.list", "path": "/workspace/private"}); err == nil {
		t.Error("listed a root-only directory")
	}
	shadowUnchanged(t, root)

	// /proc and /sys are read with the agent's identity (the host reads root-only timer_list),
	// but only by their own names: no link on the way, and a link elsewhere is a user path.
	must(t, os.MkdirAll(filepath.Join(root, "proc/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "proc/sub/timer_list"), []byte("timers"), 0o400))
	must(t, os.Symlink("/etc/shadow", filepath.Join(root, "proc/sub/link")))
	must(t, os.Symlink("sub", filepath.Join(root, "proc/dirlink")))
	must(t, os.Symlink("/proc/sub/timer_list", filepath.Join(ws, "timers")))
	if r := h.wait(h.open(map[string]any{"op": "file.read", "path": "/proc/sub/timer_list"}), 5*time.Second); r.err != nil || string(r.data) != "timers" {
		t.Errorf("kernel file: %v %q", r.err, r.data)
	}
	for _, p := range []string{"/proc/sub/link", "/proc/dirlink/timer_list", "/workspace/timers"} {
		if r := h.wait(h.open(map[string]any{"op": "file.read", "path": p}), 5*time.Second); r.err == nil || len(r.data) != 0 {
			t.Errorf("%s: read %q", p, r.data)
		}
	}

	// What the user may do still works, and what it creates is its own.
	id = h.open(map[string]any{"op": "file.write", "path": "/workspace/new/dir/main.py", "mode": 0o640})
	h.send(frameData, id, []byte("print(1)\n"))
	h.send(frameEOF, id, nil)
	if r := h.wait(id, 5*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	for _, p := range []string{"new", "new/dir", "new/dir/main.py"} {
		st, err := os.Stat(filepath.Join(ws, p))
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != userfsTestUID {
			t.Errorf("%s: %v, want owned by %d", p, err, userfsTestUID)
		}
	}
	put := h.open(map[string]any{"op": "archive.put", "path": "/workspace/up"})
	h.send(frameData, put, makeTar(t, []tarEntry{{name: "a/b.txt", body: "b"}}))
	h.send(frameEOF, put, nil)
	if r := h.wait(put, 5*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	if st, err := os.Stat(filepath.Join(ws, "up/a/b.txt")); err != nil || st.Sys().(*syscall.Stat_t).Uid != userfsTestUID {
		t.Errorf("unpacked file: %v", err)
	}
	// A root-only directory stays closed to archive.put as well.
	put = h.open(map[string]any{"op": "archive.put", "path": "/workspace/private"})
	h.send(frameData, put, makeTar(t, []tarEntry{{name: "x", body: "x"}}))
	h.send(frameEOF, put, nil)
	if r := h.wait(put, 5*time.Second); r.err == nil {
		t.Error("unpacked into a root-only directory")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/private/x")); err == nil {
		t.Error("file created in a root-only directory")
	}
}

// A process swapping /workspace/race between its own file and a link to /etc/shadow while the
// host writes and reads it: the target is never written and its content never read.
func TestFileOpsRaceLinkSwap(t *testing.T) {
	root := userRoot(t)
	race := filepath.Join(root, "workspace/race")
	h := newTestHost(t, true)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tmpLink, tmpFile := race+".l", race+".f"
		for !stop.Load() {
			os.Remove(tmpLink)
			_ = os.Symlink("/etc/shadow", tmpLink)
			_ = os.Rename(tmpLink, race)
			_ = os.WriteFile(tmpFile, []byte("mine"), 0o644)
			_ = os.Chown(tmpFile, userfsTestUID, userfsTestUID)
			_ = os.Rename(tmpFile, race)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	for i := 0; i < 300; i++ {
		id := h.open(map[string]any{"op": "file.write", "path": "/workspace/race"})
		h.send(frameData, id, []byte("root::0:0:99999:7:::\n"))
		h.send(frameEOF, id, nil)
		h.wait(id, 5*time.Second)
		if r := h.wait(h.open(map[string]any{"op": "file.read", "path": "/workspace/race"}), 5*time.Second); bytes.Contains(r.data, []byte("secret")) {
			t.Fatalf("read the target through a swapped link at round %d", i)
		}
	}
	stop.Store(true)
	wg.Wait()
	shadowUnchanged(t, root)
}

// openInRoot resolves every link inside the root: an absolute link names a path in the sandbox,
// ".." stops at its root, and neither reaches the host file of the same name.
func TestOpenInRoot(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "host-secret")
	must(t, os.WriteFile(outside, []byte("host"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "a/b/f"), []byte("in"), 0o644))
	must(t, os.Symlink(outside, filepath.Join(root, "abs-out")))
	must(t, os.Symlink("../../../../../.."+outside, filepath.Join(root, "a/up-out")))
	must(t, os.Symlink("/a/b", filepath.Join(root, "abs-in")))
	must(t, os.Symlink("/proc/self/root"+outside, filepath.Join(root, "magic")))
	old := cfg.root
	cfg.root = root
	defer func() { cfg.root = old }()
	cases := []struct {
		path string
		want string // content, "" for an error
	}{
		{"/a/b/f", "in"},
		{"/abs-in/f", "in"},
		{"/abs-out", ""},
		{"/a/up-out", ""},
		{"/magic", ""},
	}
	for _, c := range cases {
		f, err := openInRoot(c.path, filepath.Join(root, c.path), os.O_RDONLY, 0)
		got := ""
		if err == nil {
			b, _ := io.ReadAll(f)
			f.Close()
			got = string(b)
		}
		if got != c.want {
			t.Errorf("%s: got %q (%v), want %q", c.path, got, err, c.want)
		}
	}
}

func tarNames(t *testing.T, data []byte) string {
	var names []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return strings.Join(names, " ")
}
