package main

// file.write and file.read.

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

type fileRequest struct {
	Path     string `json:"path"`
	Mode     *int   `json:"mode"`
	MaxBytes int64  `json:"maxBytes"`
}

type transferResult struct {
	Bytes int64 `json:"bytes"`
	Files *int  `json:"files,omitempty"`
}

func opFileWrite(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req fileRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "file.write request: %v", err)
	}
	mode := os.FileMode(0o644)
	if req.Mode != nil {
		mode = os.FileMode(*req.Mode) & 0o7777
	}
	n, err := writeFileFrom(req.Path, mode, &dataReader{s: s}, limitOr(req.MaxBytes, defaultMaxTransferBytes))
	if err != nil {
		return nil, err
	}
	return transferResult{Bytes: n}, nil
}

// writeFileFrom writes r to the sandbox path p (parents created), at most limit bytes; a file
// over the limit or a failed write leaves nothing behind. Shared by file.write and exec's files.
func writeFileFrom(path string, mode os.FileMode, r io.Reader, limit int64) (int64, error) {
	p, err := resolve(path)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return 0, err
	}
	// O_NOFOLLOW: resolve already followed links; a link appearing now is a race, not a target.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = newOpError(codeTooLarge, "file is larger than maxBytes (%d)", limit)
	}
	if err != nil {
		os.Remove(p)
		return 0, err
	}
	_ = os.Chmod(p, mode) // O_CREAT mode is filtered by umask and ignored for existing files
	chownToExecUser(p)
	return n, nil
}

func opFileRead(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req fileRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "file.read request: %v", err)
	}
	p, err := resolve(req.Path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, newOpError(codeBadRequest, "%s is not a regular file", req.Path)
	}
	limit := limitOr(req.MaxBytes, defaultMaxTransferBytes)
	if st.Size() > limit {
		return nil, newOpError(codeTooLarge, "%s is %d bytes, more than maxBytes (%d)", req.Path, st.Size(), limit)
	}
	w := &dataWriter{c: c, s: s}
	// The file may grow while we read; never send more than the cap.
	n, err := io.Copy(w, io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, newOpError(codeTooLarge, "%s grew beyond maxBytes (%d) while being read", req.Path, limit)
	}
	return transferResult{Bytes: n}, nil
}

// chownToExecUser gives files the agent creates to the exec user, so code can modify them.
func chownToExecUser(p string) {
	if os.Getuid() == 0 && (cfg.execUID != 0 || cfg.execGID != 0) {
		_ = os.Lchown(p, cfg.execUID, cfg.execGID)
	}
}
