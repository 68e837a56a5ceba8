package main

// The scan of a workspace overlay's upper directory, as NDJSON (WORKSPACE-DESIGN.md): one line
// per entry, depth first, parents before children, names in byte order, the root not listed.
// Used by `kiln-agent host ws-scan` on the host and (QEMU) by an agent op in the guest.

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

type upperEntry struct {
	Path   string `json:"path"` // base64 of the raw relative path bytes
	Kind   string `json:"kind"` // file|dir|symlink|whiteout|other
	Mode   uint32 `json:"mode"` // st_mode & 07777
	Size   int64  `json:"size"`
	Opaque bool   `json:"opaque,omitempty"`
	Target string `json:"target,omitempty"` // base64, symlinks only
}

// opaqueXattrs: userxattr mode (unprivileged overlay) first, then the privileged one.
var opaqueXattrs = []string{"user.overlay.opaque", "trusted.overlay.opaque"}

func scanUpper(root string, w io.Writer) error {
	enc := json.NewEncoder(w)
	return scanDir(root, "", func(e upperEntry) error { return enc.Encode(e) })
}

func scanDir(root, rel string, emit func(upperEntry) error) error {
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	sort.Strings(names) // byte order: Go strings compare as bytes
	for _, name := range names {
		r := name
		if rel != "" {
			r = rel + "/" + name
		}
		e, isDir, err := statEntry(root, r)
		if err != nil {
			return err
		}
		if err := emit(e); err != nil {
			return err
		}
		if isDir {
			if err := scanDir(root, r, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

func statEntry(root, rel string) (upperEntry, bool, error) {
	p := filepath.Join(root, rel)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return upperEntry{}, false, err
	}
	e := upperEntry{Path: base64.StdEncoding.EncodeToString([]byte(rel)), Mode: st.Mode & 0o7777, Size: st.Size}
	isDir := false
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		e.Kind = "file"
	case syscall.S_IFDIR:
		e.Kind, isDir = "dir", true
		e.Size = 0
		e.Opaque = isOpaque(p)
	case syscall.S_IFLNK:
		e.Kind = "symlink"
		t, err := os.Readlink(p)
		if err != nil {
			return e, false, err
		}
		e.Target = base64.StdEncoding.EncodeToString([]byte(t))
	case syscall.S_IFCHR:
		e.Kind = "other"
		if st.Rdev == 0 {
			e.Kind = "whiteout"
		}
		e.Size = 0
	default:
		e.Kind = "other"
	}
	return e, isDir, nil
}

func isOpaque(dir string) bool {
	buf := make([]byte, 8)
	for _, name := range opaqueXattrs {
		n, err := syscall.Getxattr(dir, name, buf)
		// "y" is opaque; "x" (6.x) only marks a directory that holds whiteouts.
		if err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}
