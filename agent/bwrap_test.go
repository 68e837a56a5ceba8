package main

// Integration: the real binary as PID 1 under bubblewrap, started by an unprivileged host uid,
// in namespace mode. Skipped where bwrap, setpriv, busybox or root are missing.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const bwrapTestUID = "64100"

func TestBwrapNamespaceMode(t *testing.T) {
	for _, tool := range []string{"bwrap", "setpriv", "busybox", "ldd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if os.Getuid() != 0 || testing.Short() {
		t.Skip("needs root (to switch to an unprivileged uid) and not -short")
	}
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o755))
	must(t, os.Chmod(filepath.Dir(dir), 0o755)) // the unprivileged uid must reach the rootfs
	agent := filepath.Join(dir, "kiln-agent")
	build := exec.Command("go", "build", "-o", agent, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	lower := busyboxRoot(t, filepath.Join(dir, "rootfs"))
	h := startBwrapAgent(t, agent, lower)

	script := `grep CapEff /proc/self/status; echo w > /rootfile && cat /rootfile; ls /proc | grep -c '^[0-9]'
mount -t tmpfs t /tmp 2>/dev/null || echo mount-denied; unshare -U true 2>/dev/null || echo unshare-denied
dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1 | grep -o 'No space left'; id -u`
	r := h.wait(h.open(execReq("/bin/sh", "-c", script)), 20*time.Second)
	out := string(r.stdout) + string(r.stderr)
	for _, want := range []string{"CapEff:\t0000000000000000", "\nw\n", "mount-denied", "unshare-denied", "No space left", "\n0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if fields := strings.Split(out, "\n"); len(fields) > 2 && len(fields[2]) > 1 {
		t.Errorf("more than 9 pids visible in the sandbox's /proc: %q", fields[2])
	}
	_, err := h.call(map[string]any{"op": "exec", "argv": []string{"true"}, "uid": 1000})
	if err == nil || err.Code != codeBadRequest || !strings.Contains(err.Message, "maps only one uid") {
		t.Errorf("exec as another uid: %v", err)
	}
}

// busyboxRoot makes a minimal root filesystem: the overlay refuses a lower layer with mounts
// below it inside a user namespace, so "/" of the host cannot serve.
func busyboxRoot(t *testing.T, root string) string {
	bb, _ := exec.LookPath("busybox")
	must(t, os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	copyFile(t, bb, filepath.Join(root, "bin/busybox"), 0o755)
	out, err := exec.Command("ldd", bb).Output()
	if err == nil {
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755))
				copyFile(t, f, filepath.Join(root, f), 0o755)
			}
		}
	}
	for _, tool := range []string{"sh", "grep", "cat", "ls", "mount", "unshare", "dd", "id", "true", "echo"} {
		must(t, os.Symlink("busybox", filepath.Join(root, "bin", tool)))
	}
	return root
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	b, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, b, mode))
}

func startBwrapAgent(t *testing.T, agent, lower string) *testHost {
	inR, inW, err := os.Pipe()
	must(t, err)
	outR, outW, err := os.Pipe()
	must(t, err)
	cmd := exec.Command("setpriv", "--reuid="+bwrapTestUID, "--regid="+bwrapTestUID, "--clear-groups",
		"bwrap", "--unshare-all", "--die-with-parent", "--as-pid-1", "--cap-add", "ALL", "--uid", "0", "--gid", "0",
		"--dev", "/dev", "--proc", "/proc", "--ro-bind", lower, "/.kiln/lower", "--ro-bind", agent, "/.kiln/agent",
		"--", "/.kiln/agent", "--transport", "stdio", "--setup-root", "/.kiln/lower", "--disk-bytes", "67108864")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	// Started through the reaper: this test binary's reaper would steal a cmd.Wait.
	if _, err := startRegistered(cmd); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	h := newHostOn(t, stdioConn{in: outR, out: inW}, true)
	t.Cleanup(func() { inW.Close() }) // EOF on stdin: the agent kills everything and exits
	return h
}
