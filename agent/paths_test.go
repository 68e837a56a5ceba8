package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(t, os.Symlink("b", filepath.Join(root, "a/in")))           // stays inside
	must(t, os.Symlink("/a/b", filepath.Join(root, "abs")))         // absolute: read inside root
	must(t, os.Symlink("../../..", filepath.Join(root, "a/b/up")))  // climbs out
	must(t, os.Symlink("/etc/../..", filepath.Join(root, "absup"))) // climbs out from an absolute target
	must(t, os.Symlink("loop", filepath.Join(root, "loop")))        // loops forever
	cases := []struct {
		in   string
		want string // relative to root; "" means an error
		code string
	}{
		{"/a/b", "a/b", ""},
		{"/a//b/./", "a/b", ""},
		{"/a/in/new.txt", "a/b/new.txt", ""},
		{"/abs/x", "a/b/x", ""},
		{"/missing/deeper", "missing/deeper", ""},
		{"/../etc/passwd", "", codePathEscape},
		{"/a/../../x", "", codePathEscape},
		{"relative", "", codePathEscape},
		{"/a/b/up/etc", "", codePathEscape},
		{"/absup", "", codePathEscape},
		{"/loop", "", codeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := resolveIn(root, c.in)
			if c.code != "" {
				if err == nil || toOpError(err).Code != c.code {
					t.Fatalf("want %s, got %q %v", c.code, got, err)
				}
				return
			}
			if err != nil || got != filepath.Join(root, c.want) {
				t.Fatalf("got %q %v, want %q", got, err, filepath.Join(root, c.want))
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
