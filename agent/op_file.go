package main

// file.write and file.read, as the exec user (userfs_linux.go).

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

// writeFileFrom writes r to the sandbox path p (parents created), at most limit bytes, as the
// exec user; a file over the limit or a failed write leaves nothing behind. Shared by file.write
// and exec's files.
func writeFileFrom(path string, mode os.FileMode, r io.Reader, limit int64) (n int64, err error) {
	err = asExecUser(func() error {
		n, err = writeAsUser(path, mode, r, limit)
		return err
	})
	return n, err
}

func writeAsUser(path string, mode os.FileMode, r io.Reader, limit int64) (int64, error) {
	p, err := resolve(path)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return 0, err
	}
	// O_NONBLOCK: a fifo planted at the path must not hang the op (a regular file ignores it).
	f, err := openInRoot(path, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NONBLOCK, uint32(mode.Perm()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return 0, newOpError(codeBadRequest, "%s is not a regular file", path)
	}
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = newOpError(codeTooLarge, "file is larger than maxBytes (%d)", limit)
	}
	if err != nil {
		os.Remove(p)
		return 0, err
	}
	_ = f.Chmod(mode) // O_CREAT's mode is filtered by umask and ignored for existing files
	return n, nil
}

func opFileRead(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req fileRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "file.read request: %v", err)
	}
	if isKernelPath(req.Path) {
		return readFrom(c, s, req, func(p string) (*os.File, error) { return openKernelFile(req.Path, p) })
	}
	var res any
	err := asExecUser(func() (err error) {
		res, err = readFrom(c, s, req, func(p string) (*os.File, error) {
			return openInRoot(req.Path, p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		})
		return err
	})
	return res, err
}

func readFrom(c *conn, s *stream, req fileRequest, open func(hostPath string) (*os.File, error)) (any, error) {
	p, err := resolve(req.Path)
	if err != nil {
		return nil, err
	}
	f, err := open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, newOpError(codeIsADirectory, "%s is a directory: list it with ls or download it as an archive", req.Path)
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
