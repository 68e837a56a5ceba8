package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type zipEntry struct {
	name, body string
	mode       os.FileMode
}

func makeZip(t testing.TB, entries []zipEntry) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		must(t, err)
		_, _ = w.Write([]byte(e.body))
	}
	must(t, zw.Close())
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	must(t, zw.Close())
	return buf.Bytes()
}

// The format is read from the first bytes: what the client called it does not matter.
func TestExtractArchiveFormats(t *testing.T) {
	tree := []tarEntry{{name: "d/", typ: tar.TypeDir}, {name: "d/f.txt", body: "hi"}, {name: "l", link: "d/f.txt", typ: tar.TypeSymlink}}
	cases := []struct {
		name   string
		data   []byte
		code   string // "" = success
		msg    string
		exists map[string]string // path -> content ("" = only exists)
	}{
		{"tar", makeTar(t, tree), "", "", map[string]string{"d/f.txt": "hi", "l": ""}},
		{"tar.gz", gzipOf(t, makeTar(t, tree)), "", "", map[string]string{"d/f.txt": "hi", "l": ""}},
		{"zip", makeZip(t, []zipEntry{{name: "d/", mode: os.ModeDir | 0o755}, {name: "d/f.txt", body: "hi"}, {name: "run.sh", body: "#!/bin/sh\n", mode: 0o755}, {name: "l", body: "d/f.txt", mode: os.ModeSymlink | 0o777}}), "", "",
			map[string]string{"d/f.txt": "hi", "run.sh": "#!/bin/sh\n", "l": ""}},
		{"empty zip", makeZip(t, nil), "", "", nil},
		{"empty upload", nil, "", "", nil},
		{"zip dotdot", makeZip(t, []zipEntry{{name: "../x", body: "evil"}}), codePathEscape, "", nil},
		{"zip absolute", makeZip(t, []zipEntry{{name: "/etc/evil", body: "evil"}}), codePathEscape, "", nil},
		{"zip symlink out", makeZip(t, []zipEntry{{name: "out", body: "../..", mode: os.ModeSymlink | 0o777}}), codePathEscape, "", nil},
		{"zip too large", makeZip(t, []zipEntry{{name: "big", body: strings.Repeat("0", 2000)}}), codeTooLarge, "", nil},
		{"zip cut short", makeZip(t, []zipEntry{{name: "a", body: "alpha"}})[:40], codeBadRequest, "zip", nil},
		{"not an archive", []byte("print('hello')\n"), codeBadRequest, "not a tar, tar.gz or zip", nil},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 0}, codeBadRequest, "send a tar, tar.gz or zip", nil},
		{"file over a directory", makeTar(t, []tarEntry{{name: "d/", typ: tar.TypeDir}, {name: "d/x", body: "1"}, {name: "d", body: "file"}}), codeIsADirectory, "directory of that name is in the way", nil},
		{"link over a directory", makeZip(t, []zipEntry{{name: "d/", mode: os.ModeDir | 0o755}, {name: "d", body: "x", mode: os.ModeSymlink | 0o777}}), codeIsADirectory, "directory of that name is in the way", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "dest")
			must(t, os.MkdirAll(dest, 0o755))
			_, _, err := extractArchive(bufio.NewReader(bytes.NewReader(c.data)), dest, 1000)
			if c.code == "" && err != nil {
				t.Fatal(err)
			}
			if c.code != "" && (err == nil || toOpError(err).Code != c.code || !strings.Contains(err.Error(), c.msg)) {
				t.Fatalf("want %s (%q), got %v", c.code, c.msg, err)
			}
			for p, want := range c.exists {
				b, err := os.ReadFile(filepath.Join(dest, p))
				if err != nil || (want != "" && string(b) != want) {
					t.Fatalf("%s: %q %v", p, b, err)
				}
			}
			if st, err := os.Stat(filepath.Join(dest, "run.sh")); err == nil && st.Mode().Perm() != 0o755 {
				t.Fatalf("run.sh lost its mode: %v", st.Mode())
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dest), "x")); err == nil {
				t.Fatal("something was written outside dest")
			}
			entries, _ := os.ReadDir(dest)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".kiln-upload") {
					t.Fatalf("spool file left behind: %s", e.Name())
				}
			}
		})
	}
}
