package main

// A workspace sandbox's /workspace (--workspace-lower, --workspace-mnt): an overlay whose lower
// layer is the host project (an idmapped read-only bind the host made) and whose upper layer is on
// the workspace's own size-limited filesystem, so nothing written reaches the project and the
// changes outlive the sandbox for review. Mounted before pivot_root: afterwards neither source
// path is reachable from the sandbox. .git is bound read-only onto itself unless git-writable:
// history reads work, commits fail, guarded by the mount and not by convention.

import (
	"fmt"
	"os"
	"syscall"
)

type workspaceFlags struct {
	lower       string
	mnt         string
	gitWritable bool
}

func mountWorkspace(ws workspaceFlags, target string) error {
	if ws.lower == "" {
		return nil
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work,userxattr", ws.lower, ws.mnt, ws.mnt)
	if err := syscall.Mount("overlay", target, "overlay", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		return fmt.Errorf("overlay on %s: %w", target, err)
	}
	if ws.gitWritable {
		return nil
	}
	git := target + "/.git"
	if st, err := os.Lstat(git); err != nil || st.Mode()&os.ModeSymlink != 0 {
		return nil // not a git checkout (or .git is made later, or points elsewhere: not the project's)
	}
	if err := syscall.Mount(git, git, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", git, err)
	}
	const ro = syscall.MS_REMOUNT | syscall.MS_BIND | syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	if err := syscall.Mount("", git, "", ro, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", git, err)
	}
	return nil
}
