package main

// The scan of a workspace overlay's upper directory, as NDJSON (WORKSPACE-DESIGN.md): one line
// per entry, depth first, parents before children, names in byte order, the root not listed.
// Used by `kiln-agent host ws-scan` on the host and (QEMU) by an agent op in the guest.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sort"
	"strconv"
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
	dir, err := os.OpenFile(root, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	return scanDir(dir, "", func(e upperEntry) error { return enc.Encode(e) })
}

// scanDir goes from open directory to open directory (openat, O_NOFOLLOW): the upper belongs to
// a sandbox that may still run, and a directory it swaps for a symlink meanwhile is listed as
// what lstat saw but never entered, so the scan (root on the host) cannot be led outside.
func scanDir(dir *os.File, rel string, emit func(upperEntry) error) error {
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	sort.Strings(names) // byte order: Go strings compare as bytes
	for _, name := range names {
		r := name
		if rel != "" {
			r = rel + "/" + name
		}
		e, err := statEntry(dir, name, r)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue // removed while scanning
			}
			return err
		}
		if e.Kind != "dir" {
			if err := emit(e); err != nil {
				return err
			}
			continue
		}
		child, err := openAt(dir, name, os.O_RDONLY|syscall.O_DIRECTORY)
		if err != nil {
			if err := emit(e); err != nil { // swapped or removed since the lstat: not entered
				return err
			}
			continue
		}
		e.Opaque = isOpaque("/proc/self/fd/" + strconv.Itoa(int(child.Fd())))
		err = emit(e)
		if err == nil {
			err = scanDir(child, r, emit)
		}
		child.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func statEntry(dir *os.File, name, rel string) (upperEntry, error) {
	p := inDir(dir, name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return upperEntry{}, err
	}
	e := upperEntry{Path: base64.StdEncoding.EncodeToString([]byte(rel)), Mode: st.Mode & 0o7777, Size: st.Size}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		e.Kind = "file"
	case syscall.S_IFDIR:
		e.Kind = "dir"
		e.Size = 0
	case syscall.S_IFLNK:
		e.Kind = "symlink"
		t, err := os.Readlink(p)
		if err != nil {
			return e, err
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
	return e, nil
}

// isOpaque reads the overlay's opaque mark of the open directory at path (/proc/self/fd/N).
func isOpaque(path string) bool {
	buf := make([]byte, 8)
	for _, name := range opaqueXattrs {
		n, err := syscall.Getxattr(path, name, buf)
		// "y" is opaque; "x" (6.x) only marks a directory that holds whiteouts.
		if err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}
