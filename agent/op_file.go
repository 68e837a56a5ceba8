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
	p, err := resolve(req.Path)
	if err != nil {
		return nil, err
	}
	mode := os.FileMode(0o644)
	if req.Mode != nil {
		mode = os.FileMode(*req.Mode) & 0o7777
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	// O_NOFOLLOW: resolve already followed links; a link appearing now is a race, not a target.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return nil, err
	}
	limit := limitOr(req.MaxBytes, defaultMaxTransferBytes)
	n, err := io.Copy(f, io.LimitReader(&dataReader{s: s}, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = newOpError(codeTooLarge, "file is larger than maxBytes (%d)", limit)
	}
	if err != nil {
		os.Remove(p)
		return nil, err
	}
	_ = os.Chmod(p, mode) // O_CREAT mode is filtered by umask and ignored for existing files
	chownToExecUser(p)
	return transferResult{Bytes: n}, nil
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
