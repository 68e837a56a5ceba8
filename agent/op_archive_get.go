package main

// archive.get: stream a directory as tar (optionally gzip). Symlinks are stored as links,
// never followed, so a link cannot pull files from outside the directory into the archive.

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
)

func opArchiveGet(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req archiveRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "archive.get request: %v", err)
	}
	root, err := resolve(req.Path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(root); err != nil {
		return nil, err
	}
	var out io.Writer = &dataWriter{c: c, s: s}
	var zw *gzip.Writer
	if req.Gzip {
		zw = gzip.NewWriter(out)
		out = zw
	}
	tw := tar.NewWriter(out)
	files, bytes, err := writeTree(tw, root)
	if err == nil {
		err = tw.Close()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err != nil {
		return nil, err
	}
	return transferResult{Bytes: bytes, Files: &files}, nil
}

// writeTree archives root's contents with names relative to root; it returns entries written
// and the file content bytes.
func writeTree(tw *tar.Writer, root string) (files int, total int64, err error) {
	err = filepath.Walk(root, func(p string, st os.FileInfo, err error) error {
		if err != nil {
			return nil // vanished while walking
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		n, err := writeTarEntry(tw, p, filepath.ToSlash(rel), st)
		if err != nil {
			return err
		}
		if n >= 0 {
			files++
			total += n
		}
		return nil
	})
	return files, total, err
}

// writeTarEntry returns the content bytes written, or -1 for a skipped entry (device, socket…).
func writeTarEntry(tw *tar.Writer, p, rel string, st os.FileInfo) (int64, error) {
	link := ""
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		l, err := os.Readlink(p)
		if err != nil {
			return -1, nil
		}
		link = l
	case !st.Mode().IsRegular() && !st.IsDir():
		return -1, nil
	}
	h, err := tar.FileInfoHeader(st, link)
	if err != nil {
		return -1, nil
	}
	h.Name = rel
	if st.IsDir() {
		h.Name += "/"
	}
	h.Uname, h.Gname = "", ""
	if !st.Mode().IsRegular() {
		return 0, tw.WriteHeader(h)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscallNoFollow, 0)
	if err != nil {
		return -1, nil // unreadable: skipped rather than failing the whole archive
	}
	defer f.Close()
	if err := tw.WriteHeader(h); err != nil {
		return 0, err
	}
	// Copy exactly the size in the header: a file growing meanwhile must not corrupt the tar.
	n, err := io.CopyN(tw, f, h.Size)
	if err == io.EOF {
		_, err = tw.Write(make([]byte, h.Size-n)) // shrank: pad with zeros to keep the stream valid
	}
	return n, err
}
