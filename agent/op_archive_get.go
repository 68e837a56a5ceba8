package main

// archive.get: stream a directory as tar (optionally gzip), as the exec user. Symlinks are stored
// as links, never followed, so a link cannot pull files from outside the directory into the
// archive; the walk goes from open directory to open directory (openat, O_NOFOLLOW), so a link
// swapped in for a directory or file while it runs is stored as a link or skipped, never entered.

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"sort"
	"syscall"
)

func opArchiveGet(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req archiveRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "archive.get request: %v", err)
	}
	var res transferResult
	err := asExecUser(func() error {
		root, err := openDirInRoot(req.Path)
		if err != nil {
			return err
		}
		defer root.Close()
		res, err = streamTree(&dataWriter{c: c, s: s}, root, req.Gzip)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func streamTree(out io.Writer, root *os.File, gz bool) (transferResult, error) {
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(out)
		out = zw
	}
	tw := tar.NewWriter(out)
	files, bytes, err := writeTree(tw, root, "")
	if err == nil {
		err = tw.Close()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	return transferResult{Bytes: bytes, Files: &files}, err
}

// writeTree archives the contents of the open directory dir, names prefixed with prefix, in
// lexical order, each directory before what it holds; it returns entries written and the file
// content bytes.
func writeTree(tw *tar.Writer, dir *os.File, prefix string) (files int, total int64, err error) {
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, 0, err
	}
	sort.Strings(names)
	for _, name := range names {
		n, sub, err := writeTarEntry(tw, dir, name, prefix+name)
		if err != nil {
			return files, total, err
		}
		if n >= 0 {
			files++
			total += n
		}
		if sub != nil {
			f, t, err := writeTree(tw, sub, prefix+name+"/")
			sub.Close()
			files, total = files+f, total+t
			if err != nil {
				return files, total, err
			}
		}
	}
	return files, total, nil
}

// writeTarEntry writes the entry name of dir. It returns the content bytes written, or -1 for a
// skipped entry (device, socket, vanished, unreadable…), and for a directory the directory open.
func writeTarEntry(tw *tar.Writer, dir *os.File, name, rel string) (int64, *os.File, error) {
	st, err := os.Lstat(inDir(dir, name))
	if err != nil {
		return -1, nil, nil // vanished while walking
	}
	var f *os.File
	link := ""
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		if link, err = os.Readlink(inDir(dir, name)); err != nil {
			return -1, nil, nil
		}
	case st.IsDir() || st.Mode().IsRegular():
		// Describe what was opened, not what the name showed a moment before.
		flags := os.O_RDONLY | syscall.O_NONBLOCK
		if st.IsDir() {
			flags |= syscall.O_DIRECTORY
		}
		if f, err = openAt(dir, name, flags); err != nil {
			return -1, nil, nil // unreadable, or swapped for a link: skipped rather than failing the archive
		}
		if st, err = f.Stat(); err != nil || !(st.IsDir() || st.Mode().IsRegular()) {
			f.Close()
			return -1, nil, nil
		}
	default:
		return -1, nil, nil
	}
	h, err := tar.FileInfoHeader(st, link)
	if err != nil {
		closeIf(f)
		return -1, nil, nil
	}
	h.Name = rel
	if st.IsDir() {
		h.Name += "/"
	}
	h.Uname, h.Gname = "", ""
	if err := tw.WriteHeader(h); err != nil {
		closeIf(f)
		return 0, nil, err
	}
	if st.IsDir() {
		return 0, f, nil
	}
	if !st.Mode().IsRegular() {
		return 0, nil, nil
	}
	defer f.Close()
	// Copy exactly the size in the header: a file growing meanwhile must not corrupt the tar.
	n, err := io.CopyN(tw, f, h.Size)
	if err == io.EOF {
		_, err = tw.Write(make([]byte, h.Size-n)) // shrank: pad with zeros to keep the stream valid
	}
	return n, nil, err
}

func closeIf(f *os.File) {
	if f != nil {
		f.Close()
	}
}
