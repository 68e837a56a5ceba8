package main

// archive.put: unpack a tar, tar.gz or zip stream into a directory without ever writing outside
// it. The format is read from the first bytes, never taken from the client's word for it. Every
// entry is checked before anything is created for it, and everything is created as the exec
// user (userfs_linux.go): a link swapped in during the unpacking can only lead where that user
// could write anyway.

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

type archiveRequest struct {
	Path string `json:"path"`
	// Gzip is archive.get's choice of output; archive.put reads the format from the data.
	Gzip     bool  `json:"gzip"`
	MaxBytes int64 `json:"maxBytes"`
}

func opArchivePut(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req archiveRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "archive.put request: %v", err)
	}
	var files int
	var bytes int64
	err := asExecUser(func() error {
		dest, err := resolve(req.Path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return err
		}
		in := bufio.NewReaderSize(&dataReader{s: s}, 64<<10)
		files, bytes, err = extractArchive(in, dest, limitOr(req.MaxBytes, defaultMaxTransferBytes))
		return err
	})
	if err != nil {
		return nil, err
	}
	return transferResult{Bytes: bytes, Files: &files}, nil
}

// Magic numbers of the formats told apart by their first bytes.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZip   = []byte("PK\x03\x04")
	magicZip0  = []byte("PK\x05\x06") // an empty zip: only the end of its directory
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	magicBzip2 = []byte("BZh")
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// extractArchive unpacks a tar, tar.gz or zip, whichever the data is.
func extractArchive(in *bufio.Reader, dest string, maxBytes int64) (int, int64, error) {
	head, err := in.Peek(6)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return 0, 0, err // a cancelled transfer, not a short archive
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(in)
		if err != nil {
			return 0, 0, newOpError(codeBadRequest, "archive starts like gzip but is not: %v", err)
		}
		return extractTar(zr, dest, maxBytes)
	case bytes.HasPrefix(head, magicZip) || bytes.HasPrefix(head, magicZip0):
		return extractZip(in, dest, maxBytes)
	case bytes.HasPrefix(head, magicXz), bytes.HasPrefix(head, magicBzip2), bytes.HasPrefix(head, magicZstd):
		return 0, 0, newOpError(codeBadRequest, "xz, bzip2 and zstd archives are not supported: send a tar, tar.gz or zip")
	}
	return extractTar(in, dest, maxBytes)
}

// extractTar unpacks into dest (a host path). It is the unit under test for escapes.
func extractTar(in io.Reader, dest string, maxBytes int64) (files int, total int64, err error) {
	tr := tar.NewReader(in)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, total, nil
		}
		if err != nil && files == 0 && (err == tar.ErrHeader || err == io.ErrUnexpectedEOF) {
			return files, total, newOpError(codeBadRequest, "the upload is not a tar, tar.gz or zip archive, or it is cut short (%v)", err)
		}
		if err != nil {
			return files, total, toArchiveError(err)
		}
		name, err := entryName(h.Name)
		if err != nil || name == "" {
			if err == nil {
				continue // "./" itself
			}
			return files, total, err
		}
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA {
			if total += h.Size; total > maxBytes {
				return files, total, newOpError(codeTooLarge, "archive unpacks to more than maxBytes (%d)", maxBytes)
			}
		}
		if err := extractEntry(tr, h, dest, name); err != nil {
			return files, total, err
		}
		files++
	}
}

// entryName rejects absolute names and ".." anywhere, and returns the cleaned relative name.
func entryName(n string) (string, error) {
	if strings.HasPrefix(n, "/") || strings.IndexByte(n, 0) >= 0 {
		return "", newOpError(codePathEscape, "archive entry %q is absolute", n)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", newOpError(codePathEscape, "archive entry %q contains '..'", n)
		}
	}
	c := path.Clean(n)
	if c == "." {
		return "", nil
	}
	return c, nil
}

func extractEntry(data io.Reader, h *tar.Header, dest, name string) error {
	// The parent must resolve inside dest; walkIn refuses any symlink that climbs out.
	parent, err := walkIn(dest, splitPath(path.Dir(name)), h.Name, false)
	if err != nil {
		return newOpError(codePathEscape, "archive entry %q would be written through a symlink that leaves the destination", h.Name)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	target := filepath.Join(parent, path.Base(name))
	mode := os.FileMode(h.Mode) & 0o7777
	switch h.Typeflag {
	case tar.TypeDir:
		return mkdirEntry(dest, name, target, mode)
	case tar.TypeReg, tar.TypeRegA:
		return writeEntry(data, target, mode)
	case tar.TypeSymlink:
		return symlinkEntry(h, dest, name, target)
	case tar.TypeLink:
		return newOpError(codeBadRequest, "archive entry %q is a hard link; only files, directories and symlinks are accepted", h.Name)
	default:
		return newOpError(codeBadRequest, "archive entry %q has unsupported type %q (devices, fifos and sockets are refused)", h.Name, h.Typeflag)
	}
}

func mkdirEntry(dest, name, target string, mode os.FileMode) error {
	st, err := os.Lstat(target)
	if err == nil && st.Mode()&os.ModeSymlink != 0 {
		// an existing link to a directory is fine only if it stays inside dest
		if _, err := walkIn(dest, splitPath(name), name, false); err != nil {
			return newOpError(codePathEscape, "archive entry %q is a symlink leaving the destination", name)
		}
		return nil
	}
	if err := os.MkdirAll(target, mode|0o700); err != nil {
		return err
	}
	_ = os.Chmod(target, mode|0o700)
	return nil
}

// writeEntry replaces whatever is at target (a symlink is removed, never followed).
func writeEntry(data io.Reader, target string, mode os.FileMode) error {
	if st, err := os.Lstat(target); err == nil && st.IsDir() {
		return newOpError(codeIsADirectory, "archive entry %s is a file but a directory of that name is in the way", filepath.Base(target))
	} else if err == nil {
		if err := os.Remove(target); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, data)
	_ = f.Chmod(mode) // O_CREAT's mode went through the umask
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return toArchiveError(err)
	}
	return nil
}

// symlinkEntry accepts a link only if its target, read relative to the link, stays inside dest.
func symlinkEntry(h *tar.Header, dest, name, target string) error {
	t := h.Linkname
	if t == "" || strings.HasPrefix(t, "/") {
		return newOpError(codePathEscape, "archive symlink %q -> %q must be relative and stay inside the destination", h.Name, t)
	}
	// Resolve physically, through links already unpacked: a lexical check misses "x -> ." then "y -> x/..".
	if _, err := walkIn(dest, append(splitPath(path.Dir(name)), splitPath(t)...), h.Name, false); err != nil {
		return newOpError(codePathEscape, "archive symlink %q -> %q leaves the destination", h.Name, t)
	}
	if st, err := os.Lstat(target); err == nil && st.IsDir() {
		return newOpError(codeIsADirectory, "archive symlink %q: a directory of that name is in the way", h.Name)
	} else if err == nil {
		_ = os.Remove(target)
	}
	return os.Symlink(t, target)
}

func toArchiveError(err error) error {
	if _, ok := err.(*opError); ok {
		return err
	}
	if err == tar.ErrHeader || err == io.ErrUnexpectedEOF || err == gzip.ErrChecksum || err == gzip.ErrHeader || err == zip.ErrFormat || err == zip.ErrChecksum || err == zip.ErrAlgorithm {
		return newOpError(codeBadRequest, "archive is malformed: %v", err)
	}
	return err
}
