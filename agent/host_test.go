package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestParseIDPair(t *testing.T) {
	for _, c := range []struct {
		in   string
		want idPair
		ok   bool
	}{
		{"1000:270000", idPair{1000, 270000}, true},
		{"0:0", idPair{0, 0}, true},
		{"1000", idPair{}, false},
		{"-1:5", idPair{}, false},
		{"a:5", idPair{}, false},
		{"1:4294967296", idPair{}, false},
	} {
		got, err := parseIDPair(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseIDPair(%q) = %v, %v; want %v, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

type scanned struct {
	path  string
	entry upperEntry
}

func scanForTest(t *testing.T, dir string) []scanned {
	t.Helper()
	var buf bytes.Buffer
	if err := scanUpper(dir, &buf); err != nil {
		t.Fatal(err)
	}
	var out []scanned
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var e upperEntry
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		p, err := base64.StdEncoding.DecodeString(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, scanned{string(p), e})
	}
	return out
}

func TestScanUpper(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("whiteouts (char 0/0) need CAP_MKNOD")
	}
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "d/sub"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "d/sub/f"), []byte("12345"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "with space"), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "bad\xffname"), nil, 0o755))
	must(os.Symlink("../target", filepath.Join(dir, "link")))
	must(syscall.Mknod(filepath.Join(dir, "gone"), syscall.S_IFCHR, 0))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(syscall.Setxattr(filepath.Join(dir, "d"), "user.overlay.opaque", []byte("y"), 0))
	got := scanForTest(t, dir)
	want := []struct {
		path, kind string
		mode       uint32
		size       int64
		opaque     bool
		target     string
	}{
		{"bad\xffname", "file", 0o755, 0, false, ""},
		{"d", "dir", 0o750, 0, true, ""},
		{"d/sub", "dir", 0o750, 0, false, ""},
		{"d/sub/f", "file", 0o600, 5, false, ""},
		{"fifo", "other", 0o644, 0, false, ""},
		{"gone", "whiteout", 0, 0, false, ""},
		{"link", "symlink", 0o777, 9, false, "../target"},
		{"with space", "file", 0o644, 1, false, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		target, _ := base64.StdEncoding.DecodeString(g.entry.Target)
		if g.path != w.path || g.entry.Kind != w.kind || g.entry.Mode&^syscall.S_IFMT != w.mode || g.entry.Size != w.size || g.entry.Opaque != w.opaque || string(target) != w.target {
			t.Errorf("entry %d = %q %+v, want %+v", i, g.path, g.entry, w)
		}
	}
}

func TestIdmapBind(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("idmapped mounts need root")
	}
	src, dst := t.TempDir(), t.TempDir()
	file := filepath.Join(src, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(file, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := idmapBind(src, dst, idPair{1000, 424242}, idPair{1001, 434343}); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(dst, syscall.MNT_DETACH)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dst, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 424242 || st.Gid != 434343 {
		t.Errorf("through the mount f is %d:%d, want 424242:434343", st.Uid, st.Gid)
	}
	// The directory itself is root's: unmapped, it shows as the overflow id.
	if err := syscall.Stat(dst, &st); err != nil || st.Uid != 65534 {
		t.Errorf("unmapped owner shows as %d (%v), want 65534", st.Uid, err)
	}
	if err := os.WriteFile(filepath.Join(dst, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through the bind: %v, want EROFS", err)
	}
}

func TestWsMount(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("loop devices and mounts need root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("no mkfs.ext4 (e2fsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "u.img"), filepath.Join(dir, "mnt")
	if out, err := exec.Command(mkfs, "-q", "-F", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := wsMount(img, mnt, 424242); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	for _, d := range []string{"upper", "work"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(mnt, d), &st); err != nil || st.Uid != 424242 || st.Gid != 424242 {
			t.Errorf("%s: %+v %v, want owned by 424242", d, st, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(mnt, "lost+found")); !os.IsNotExist(err) {
		t.Errorf("lost+found is left: %v", err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &fs); err != nil || fs.Flags&(syscall.MS_NOSUID|syscall.MS_NODEV) != syscall.MS_NOSUID|syscall.MS_NODEV {
		t.Errorf("mount flags %#x (%v), want nosuid,nodev", fs.Flags, err)
	}
}
