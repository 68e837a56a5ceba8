package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type tarEntry struct {
	name, link, body string
	typ              byte
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		must(t, tw.WriteHeader(h))
		if h.Size > 0 {
			_, _ = tw.Write([]byte(e.body))
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func TestExtractTar(t *testing.T) {
	cases := []struct {
		name    string
		entries []tarEntry
		code    string // "" = success
		exists  []string
	}{
		{"plain tree", []tarEntry{{name: "d/", typ: tar.TypeDir}, {name: "d/f.txt", body: "hi"}, {name: "l", link: "d/f.txt", typ: tar.TypeSymlink}}, "", []string{"d/f.txt", "l"}},
		{"dot slash names", []tarEntry{{name: "./", typ: tar.TypeDir}, {name: "./x/y", body: "1"}}, "", []string{"x/y"}},
		{"dotdot", []tarEntry{{name: "../x", body: "evil"}}, codePathEscape, nil},
		{"inner dotdot", []tarEntry{{name: "a/../../x", body: "evil"}}, codePathEscape, nil},
		{"absolute", []tarEntry{{name: "/etc/evil", body: "evil"}}, codePathEscape, nil},
		{"symlink out", []tarEntry{{name: "out", link: "../..", typ: tar.TypeSymlink}}, codePathEscape, nil},
		{"absolute symlink", []tarEntry{{name: "out", link: "/etc", typ: tar.TypeSymlink}}, codePathEscape, nil},
		{"link to self then up", []tarEntry{{name: "x", link: ".", typ: tar.TypeSymlink}, {name: "y", link: "x/..", typ: tar.TypeSymlink}}, codePathEscape, nil},
		{"hard link", []tarEntry{{name: "h", link: "/etc/passwd", typ: tar.TypeLink}}, codeBadRequest, nil},
		{"fifo", []tarEntry{{name: "p", typ: tar.TypeFifo}}, codeBadRequest, nil},
		{"char device", []tarEntry{{name: "c", typ: tar.TypeChar}}, codeBadRequest, nil},
		{"too large", []tarEntry{{name: "big", body: string(make([]byte, 2000))}}, codeTooLarge, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "dest")
			must(t, os.MkdirAll(dest, 0o755))
			_, _, err := extractTar(bytes.NewReader(makeTar(t, c.entries)), dest, 1000)
			if c.code == "" && err != nil {
				t.Fatal(err)
			}
			if c.code != "" && (err == nil || toOpError(err).Code != c.code) {
				t.Fatalf("want %s, got %v", c.code, err)
			}
			for _, p := range c.exists {
				if _, err := os.Lstat(filepath.Join(dest, p)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dest), "x")); err == nil {
				t.Fatal("something was written outside dest")
			}
		})
	}
}

// A symlink that already exists in the destination (the sandbox made it) must not be written
// through, neither as a parent nor as the file itself.
func TestExtractThroughExistingSymlink(t *testing.T) {
	base := t.TempDir()
	dest, outside := filepath.Join(base, "dest"), filepath.Join(base, "outside")
	must(t, os.MkdirAll(dest, 0o755))
	must(t, os.MkdirAll(outside, 0o755))
	must(t, os.Symlink(outside, filepath.Join(dest, "esc")))
	must(t, os.Symlink("../outside", filepath.Join(dest, "rel")))
	must(t, os.Symlink(filepath.Join(outside, "victim"), filepath.Join(dest, "file")))
	for _, name := range []string{"esc/pwned", "rel/pwned", "rel/deeper/pwned"} {
		_, _, err := extractTar(bytes.NewReader(makeTar(t, []tarEntry{{name: name, body: "x"}})), dest, 1000)
		if err == nil || toOpError(err).Code != codePathEscape {
			t.Fatalf("write through dir symlink %s: %v", name, err)
		}
	}
	if _, _, err := extractTar(bytes.NewReader(makeTar(t, []tarEntry{{name: "file", body: "x"}})), dest, 1000); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("wrote outside: %v", entries)
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	h := newTestHost(t, true)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(makeTar(t, []tarEntry{{name: "p/a.txt", body: "alpha"}, {name: "p/s", link: "a.txt", typ: tar.TypeSymlink}}))
	zw.Close()
	id := h.open(map[string]any{"op": "archive.put", "path": "/arc", "gzip": true, "maxBytes": 1 << 20})
	h.send(frameData, id, gz.Bytes())
	h.send(frameEOF, id, nil)
	if r := h.wait(id, 5*time.Second); r.err != nil || r.result["files"] != 2.0 || r.result["bytes"] != 5.0 {
		t.Fatalf("put: %v %v", r.result, r.err)
	}
	r := h.wait(h.open(map[string]any{"op": "archive.get", "path": "/arc", "gzip": true}), 5*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(r.data))
	must(t, err)
	tr := tar.NewReader(zr)
	names := map[string]string{}
	for {
		hd, err := tr.Next()
		if err != nil {
			break
		}
		names[hd.Name] = hd.Linkname
	}
	if _, ok := names["p/a.txt"]; !ok || names["p/s"] != "a.txt" {
		t.Fatalf("entries %v", names)
	}
}
