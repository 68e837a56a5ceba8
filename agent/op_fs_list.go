package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
)

const maxListEntries = 10000

type fsEntry struct {
	Name    string  `json:"name"`
	Type    string  `json:"type"`
	Size    int64   `json:"size"`
	Mode    uint32  `json:"mode"`
	MtimeMs float64 `json:"mtimeMs"`
}

func opFsList(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "fs.list request: %v", err)
	}
	p, err := resolve(req.Path)
	if err != nil {
		return nil, err
	}
	dir, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	if st, err := dir.Stat(); err != nil || !st.IsDir() {
		return nil, newOpError(codeBadRequest, "%s is not a directory", req.Path)
	}
	names, _ := dir.Readdirnames(maxListEntries) // the protocol caps a listing at 10 000
	entries := make([]fsEntry, 0, len(names))
	for _, name := range names {
		st, err := os.Lstat(filepath.Join(p, name))
		if err != nil {
			continue // removed while listing
		}
		entries = append(entries, entryOf(name, st))
	}
	return map[string]any{"entries": entries}, nil
}

func entryOf(name string, st os.FileInfo) fsEntry {
	e := fsEntry{Name: name, Type: "other", Size: st.Size(), MtimeMs: float64(st.ModTime().UnixNano()) / 1e6}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		e.Mode = sys.Mode & 0o7777
	}
	switch {
	case st.Mode().IsRegular():
		e.Type = "file"
	case st.IsDir():
		e.Type = "dir"
	case st.Mode()&os.ModeSymlink != 0:
		e.Type = "symlink"
	}
	return e
}
