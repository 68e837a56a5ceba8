package main

import (
	"encoding/json"
	"os"
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

// opFsList lists a directory as the exec user; entries are looked up in the directory that was
// opened, so a link swapped in for it meanwhile changes nothing (userfs_linux.go).
func opFsList(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "fs.list request: %v", err)
	}
	var entries []fsEntry
	err := asExecUser(func() error {
		dir, err := openDirInRoot(req.Path)
		if err != nil {
			return err
		}
		defer dir.Close()
		names, _ := dir.Readdirnames(maxListEntries) // the protocol caps a listing at 10 000
		entries = make([]fsEntry, 0, len(names))
		for _, name := range names {
			st, err := os.Lstat(inDir(dir, name))
			if err != nil {
				continue // removed while listing
			}
			entries = append(entries, entryOf(name, st))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"entries": entries}, nil
}

func isErrno(err error, e syscall.Errno) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == e
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
