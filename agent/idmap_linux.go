package main

// An idmapped bind mount of a host project directory (the workspace's lower layer): the project
// owner's uid/gid on disk show as the sandbox's host uid/gid through the mount, so inside the
// sandbox's user namespace (0 ↔ host uid) the project belongs to the sandbox's root. util-linux
// here has no X-mount.idmap, so: open_tree(OPEN_TREE_CLONE) → mount_setattr(MOUNT_ATTR_IDMAP with
// the user namespace of a child made with the mapping) → move_mount.

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

const (
	sysOpenTree     = 428
	sysMoveMount    = 429
	sysMountSetattr = 442

	openTreeClone       = 0x1
	openTreeCloexec     = syscall.O_CLOEXEC
	atEmptyPath         = 0x1000
	moveMountFEmptyPath = 0x4

	mountAttrRdonly = 0x1
	mountAttrNosuid = 0x2
	mountAttrNodev  = 0x4
	mountAttrIdmap  = 0x100000
)

// atFdcwd is AT_FDCWD (a variable: a negative constant cannot convert to uintptr).
var atFdcwd = -100

// mountAttr is struct mount_attr (MOUNT_ATTR_SIZE_VER0 = 32).
type mountAttr struct {
	attrSet     uint64
	attrClr     uint64
	propagation uint64
	usernsFd    uint64
}

func idmapBind(src, dst string, uid, gid idPair) error {
	usernsFd, err := mappedUserns(uid, gid)
	if err != nil {
		return fmt.Errorf("user namespace with the mapping: %w", err)
	}
	defer syscall.Close(usernsFd)
	srcp, err := syscall.BytePtrFromString(src)
	if err != nil {
		return err
	}
	r, _, errno := syscall.Syscall(sysOpenTree, uintptr(atFdcwd), uintptr(unsafe.Pointer(srcp)), openTreeClone|openTreeCloexec)
	if errno != 0 {
		return fmt.Errorf("open_tree %s: %w", src, errno)
	}
	treeFd := int(r)
	defer syscall.Close(treeFd)
	attr := mountAttr{attrSet: mountAttrIdmap | mountAttrRdonly | mountAttrNosuid | mountAttrNodev, usernsFd: uint64(usernsFd)}
	empty, _ := syscall.BytePtrFromString("")
	if _, _, errno := syscall.Syscall6(sysMountSetattr, uintptr(treeFd), uintptr(unsafe.Pointer(empty)), atEmptyPath, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0); errno != 0 {
		return fmt.Errorf("mount_setattr (idmap) on %s: %w (the filesystem may not support idmapped mounts)", src, errno)
	}
	dstp, err := syscall.BytePtrFromString(dst)
	if err != nil {
		return err
	}
	if _, _, errno := syscall.Syscall6(sysMoveMount, uintptr(treeFd), uintptr(unsafe.Pointer(empty)), uintptr(atFdcwd), uintptr(unsafe.Pointer(dstp)), moveMountFEmptyPath, 0); errno != 0 {
		return fmt.Errorf("move_mount to %s: %w", dst, errno)
	}
	return nil
}

// mappedUserns returns an fd of a user namespace mapping uid.from→uid.to and gid.from→gid.to,
// made by a child that waits on its stdin and is gone before we return.
func mappedUserns(uid, gid idPair) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return -1, err
	}
	cmd := exec.Command(self, hostMode, "idmap-hold")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: int(uid.from), HostID: int(uid.to), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: int(gid.from), HostID: int(gid.to), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	hold, err := cmd.StdinPipe()
	if err != nil {
		return -1, err
	}
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	defer func() {
		_ = hold.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	// The maps are written before the child runs (Go's fork waits for them), so the namespace is complete here.
	return syscall.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
}
