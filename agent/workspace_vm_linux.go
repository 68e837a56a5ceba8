package main

// A microVM's workspace (kiln.workspace=ro|rw on the kernel command line): the host attaches a
// squashfs snapshot of the project and the workspace's ext4 upper image as extra virtio drives,
// told apart by their serials. The overlay goes on /workspace like in namespace mode
// (mountWorkspace); the upper stays mounted at vmWorkspaceMnt for the ws.scan op.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	vmWorkspaceDir   = "/.kiln-ws"
	vmWorkspaceLower = vmWorkspaceDir + "/lower"
	vmWorkspaceMnt   = vmWorkspaceDir + "/rw"
	// serials of the drives (src/backends/qemu/cmdline.ts)
	wsLowerSerial = "kiln-ws-lower"
	wsUpperSerial = "kiln-ws-upper"
)

func mountVMWorkspace(execUID int, gitWritable bool) error {
	lower, err := diskBySerial(wsLowerSerial, 5*time.Second)
	if err != nil {
		return err
	}
	upper, err := diskBySerial(wsUpperSerial, 5*time.Second)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(vmWorkspaceDir, 0o700); err != nil {
		return err
	}
	if err := mkdirs(0o700, vmWorkspaceLower, vmWorkspaceMnt); err != nil {
		return err
	}
	const nosuid = syscall.MS_NOSUID | syscall.MS_NODEV
	if err := syscall.Mount(lower, vmWorkspaceLower, "squashfs", syscall.MS_RDONLY|nosuid, ""); err != nil {
		return fmt.Errorf("mount the project snapshot %s (squashfs): %w", lower, err)
	}
	if err := syscall.Mount(upper, vmWorkspaceMnt, "ext4", nosuid|syscall.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount the upper image %s (ext4): %w", upper, err)
	}
	for _, d := range []string{"upper", "work"} {
		p := vmWorkspaceMnt + "/" + d
		if _, err := os.Lstat(p); err == nil {
			continue // an earlier sandbox's: its owner stays
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
		if d == "upper" {
			// The merged root takes the upper root's owner: the exec user's, like the snapshot's files.
			if err := os.Lchown(p, execUID, execUID); err != nil {
				return err
			}
		}
	}
	_ = os.RemoveAll(vmWorkspaceMnt + "/lost+found")
	return mountWorkspace(workspaceFlags{lower: vmWorkspaceLower, mnt: vmWorkspaceMnt, gitWritable: gitWritable}, "/workspace")
}

// diskBySerial finds /dev/vdX whose virtio serial is serial, waiting for the driver to probe it.
func diskBySerial(serial string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		matches, _ := filepath.Glob("/sys/block/vd*/serial")
		for _, m := range matches {
			if strings.TrimSpace(readFileString(m)) == serial {
				return "/dev/" + filepath.Base(filepath.Dir(m)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio disk with serial %s after %v (are the workspace drives attached?)", serial, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// opWorkspaceScan streams the scan of the VM workspace's upper directory (the NDJSON of
// `kiln-agent host ws-scan`) as DATA frames.
func opWorkspaceScan(c *conn, s *stream, raw json.RawMessage) (any, error) {
	upper := vmWorkspaceMnt + "/upper"
	if _, err := os.Lstat(upper); err != nil {
		return nil, newOpError(codeNotFound, "this sandbox has no workspace upper layer to scan")
	}
	cw := &countingWriter{w: &dataWriter{c: c, s: s}}
	bw := bufio.NewWriterSize(cw, dataChunkBytes)
	if err := scanUpper(upper, bw); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return transferResult{Bytes: cw.n}, nil
}

// opWorkspaceFlush writes the guest's dirty pages and the upper's journal to the drive: the host
// kills a VM without a shutdown, and what ext4 had not committed yet (up to 5 s of writes) would
// be lost to the review.
func opWorkspaceFlush(c *conn, s *stream, raw json.RawMessage) (any, error) {
	if _, err := os.Lstat(vmWorkspaceMnt + "/upper"); err != nil {
		return nil, newOpError(codeNotFound, "this sandbox has no workspace upper layer to flush")
	}
	// sync(2), not syncfs: the guest's other filesystems are tmpfs, and package syscall has no
	// portable syncfs number.
	syscall.Sync()
	return map[string]any{}, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}
