package main

// `kiln-agent host ws-mount IMAGE MNT HOSTUID`: loop-mounts a workspace's ext4 upper image and
// makes its upper/ and work/ (owned by the sandbox's host uid). The loop device is set up here
// with LOOP_CTL_GET_FREE + LOOP_CONFIGURE rather than by mount(8): util-linux's loop set-up
// scans every loop device and costs 10-30 ms on a busy host, this costs well under one.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"
)

const (
	loopCtlGetFree   = 0x4C82
	loopConfigure    = 0x4C0A
	loFlagsAutoclear = 4
)

// loopInfo64 is struct loop_info64 (232 bytes).
type loopInfo64 struct {
	device, inode, rdevice, offset, sizelimit  uint64
	number, encryptType, encryptKeySize, flags uint32
	fileName                                   [64]byte
	cryptName                                  [64]byte
	encryptKey                                 [32]byte
	init                                       [2]uint64
}

// loopConfig is struct loop_config (LOOP_CONFIGURE, Linux 5.8).
type loopConfig struct {
	fd        uint32
	blockSize uint32
	info      loopInfo64
	reserved  [8]uint64
}

func wsMount(image, mnt string, hostUID int) error {
	if err := loopMount(image, mnt, "ext4", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOATIME); err != nil {
		return err
	}
	for _, d := range []string{"upper", "work"} {
		p := filepath.Join(mnt, d)
		if _, err := os.Lstat(p); err == nil {
			continue // a re-attach: the layers are there with their owner
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
		if err := os.Lchown(p, hostUID, hostUID); err != nil {
			return err
		}
	}
	return os.RemoveAll(filepath.Join(mnt, "lost+found"))
}

// loopMount attaches image to a free loop device (autoclear: it goes with the last unmount) and
// mounts it on target.
func loopMount(image, target, fstype string, flags uintptr) error {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	for attempt := 0; ; attempt++ {
		n, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), loopCtlGetFree, 0)
		if errno != 0 {
			return fmt.Errorf("LOOP_CTL_GET_FREE: %w", errno)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		loop, err := configureLoop(dev, img, image)
		if errors.Is(err, syscall.EBUSY) && attempt < 16 {
			continue // another process took it between the two calls
		}
		if err != nil {
			return err
		}
		// Held open until mounted: with autoclear, the last close frees the device unless a
		// mount holds it.
		err = syscall.Mount(dev, target, fstype, flags, "")
		loop.Close()
		if err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", image, dev, target, err)
		}
		return nil
	}
}

func configureLoop(dev string, img *os.File, name string) (*os.File, error) {
	loop, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	cfg := loopConfig{fd: uint32(img.Fd())}
	cfg.info.flags = loFlagsAutoclear
	copy(cfg.info.fileName[:len(cfg.info.fileName)-1], name)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, loop.Fd(), loopConfigure, uintptr(unsafe.Pointer(&cfg))); errno != 0 {
		loop.Close()
		return nil, fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, errno)
	}
	return loop, nil
}
