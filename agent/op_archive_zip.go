package main

// archive.put of a zip. archive/zip needs random access (the directory is at the end), so the
// upload is first spooled to an unlinked file in the destination, as the exec user: it counts
// against the sandbox disk like what it unpacks to, and disappears however the op ends. Entries
// then go through the same checks and writers as tar entries.

import (
	"archive/tar"
	"archive/zip"
	"io"
	"os"
)

const maxZipLinkTarget = 4096

func extractZip(in io.Reader, dest string, maxBytes int64) (files int, total int64, err error) {
	spool, err := os.CreateTemp(dest, ".kiln-upload-*.zip")
	if err != nil {
		return 0, 0, err
	}
	os.Remove(spool.Name())
	defer spool.Close()
	n, err := io.Copy(spool, io.LimitReader(in, maxBytes+1))
	if err != nil {
		return 0, 0, err
	}
	if n > maxBytes {
		return 0, 0, newOpError(codeTooLarge, "zip archive is larger than maxBytes (%d)", maxBytes)
	}
	zr, err := zip.NewReader(spool, n)
	if err != nil {
		return 0, 0, newOpError(codeBadRequest, "zip archive is malformed: %v", err)
	}
	for _, zf := range zr.File {
		name, err := entryName(zf.Name)
		if err != nil {
			return files, total, err
		}
		if name == "" {
			continue
		}
		if zf.Mode().IsRegular() {
			if total += int64(zf.UncompressedSize64); total > maxBytes || zf.UncompressedSize64 > uint64(maxBytes) {
				return files, total, newOpError(codeTooLarge, "archive unpacks to more than maxBytes (%d)", maxBytes)
			}
		}
		if err := extractZipEntry(zf, dest, name); err != nil {
			return files, total, err
		}
		files++
	}
	return files, total, nil
}

// extractZipEntry describes a zip entry as the tar header extractEntry takes. zip's reader stops
// at the size the entry declares, so total above is a real bound.
func extractZipEntry(zf *zip.File, dest, name string) error {
	m := zf.Mode()
	perm := int64(m.Perm())
	if perm == 0 { // zips made without Unix modes
		perm = 0o644
	}
	h := &tar.Header{Name: zf.Name, Mode: perm}
	switch {
	case m.IsDir():
		h.Typeflag = tar.TypeDir
		return extractEntry(nil, h, dest, name)
	case m&os.ModeSymlink != 0:
		h.Typeflag = tar.TypeSymlink
	case m.IsRegular():
		h.Typeflag = tar.TypeReg
	default:
		return newOpError(codeBadRequest, "archive entry %q is a device, fifo or socket; only files, directories and symlinks are accepted", zf.Name)
	}
	rc, err := zf.Open()
	if err != nil {
		return toArchiveError(err)
	}
	defer rc.Close()
	if h.Typeflag == tar.TypeSymlink {
		target, err := io.ReadAll(io.LimitReader(rc, maxZipLinkTarget+1))
		if err != nil {
			return toArchiveError(err)
		}
		if len(target) > maxZipLinkTarget {
			return newOpError(codeBadRequest, "archive symlink %q has a target longer than %d bytes", zf.Name, maxZipLinkTarget)
		}
		h.Linkname = string(target)
		return extractEntry(nil, h, dest, name)
	}
	return extractEntry(rc, h, dest, name)
}
