package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withTestCgroups points execCgroups at a fresh cgroup below this process's own (v1 pids or v2).
func withTestCgroups(t *testing.T, traced bool) string {
	if os.Getuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	name, base := "unified", "/sys/fs/cgroup"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		name, base = "pids", "/sys/fs/cgroup/pids"
		if _, err := os.Stat(base + "/cgroup.procs"); err != nil {
			t.Skip("no v2 hierarchy and no v1 pids controller")
		}
	}
	dir := filepath.Join(base, ownCgroup(name == "pids"), fmt.Sprintf("kiln-agent-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	execCgroups = &cgroupSet{v2: name == "unified", hiers: []cgroupHier{{name: name, fd: fd, track: true}}, traced: traced, shimOnly: testShimOnly}
	t.Cleanup(func() {
		execCgroups = nil
		syscall.Close(fd)
		removeTestCgroup(t, dir)
	})
	return dir
}

// bothStarts runs a test with execs started through the shim (namespace sandboxes on v2), from a
// thread placed in the cgroup (namespace sandboxes on v1; a v1 host only) and traced (VMs).
func bothStarts(t *testing.T, test func(*testing.T, bool)) {
	t.Run("shim", func(t *testing.T) {
		withShimOnly(t)
		test(t, false)
	})
	t.Run("thread", func(t *testing.T) {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
			t.Skip("cgroup v2: threads cannot be placed one by one")
		}
		test(t, false)
	})
	t.Run("traced", func(t *testing.T) { test(t, true) })
}

// withShimOnly makes the next withTestCgroups start execs through the shim.
func withShimOnly(t *testing.T) {
	testShimOnly = true
	t.Cleanup(func() { testShimOnly = false })
}

var testShimOnly bool

// removeTestCgroup kills what is left in dir's exec cgroups (a failed test) and removes them all.
func removeTestCgroup(t *testing.T, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		subs, _ := filepath.Glob(dir + "/exec-*")
		for _, sub := range append(subs, dir) {
			procs, _ := os.ReadFile(sub + "/cgroup.procs")
			for _, f := range strings.Fields(string(procs)) {
				// This process is listed while a thread that started an exec is still ending there.
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			_ = os.Remove(sub)
		}
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cannot remove test cgroup %s", dir)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ownCgroup(pids bool) string {
	b, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (pids && strings.Contains(","+parts[1]+",", ",pids,")) || (!pids && parts[0] == "0") {
			return parts[2]
		}
	}
	return "/"
}

// processesWithArg lists live processes whose command line is "sleep <arg>" (not the shell
// whose script mentions it).
func processesWithArg(arg string) []int {
	want := []byte("sleep\x00" + arg + "\x00")
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		_, state, ok := procStat(pid)
		if ok && state != 'Z' && bytes.Equal(cmd, want) {
			out = append(out, pid)
		}
	}
	return out
}

// A process that leaves the session and process group, clears its environment and is
// re-parented dies with the exec's timeout; tree kill by group, parent links and tag cannot see it.
func TestExecCgroupTimeoutKillsDetached(t *testing.T) {
	bothStarts(t, testExecCgroupTimeoutKillsDetached)
}

func testExecCgroupTimeoutKillsDetached(t *testing.T, traced bool) {
	withTestCgroups(t, traced)
	marker := fmt.Sprintf("1000.%d", os.Getpid())
	h := newTestHost(t, true)
	id := h.open(map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c",
		"( setsid sh -c 'exec env -i sleep " + marker + "' & ); sleep 0.3; sleep 1000"}, "timeoutMs": 1500})
	r := h.wait(id, 20*time.Second)
	if r.err != nil || r.result["timedOut"] != true {
		t.Fatalf("result %v err %v", r.result, r.err)
	}
	if left := processesWithArg(marker); len(left) > 0 {
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("detached process survived the timeout: %v", left)
	}
}

// The command runs in its exec's cgroup from its first instruction, and the shim leaves no
// descriptor behind.
func TestExecCgroupPlacesBeforeExec(t *testing.T) { bothStarts(t, testExecCgroupPlacesBeforeExec) }

func testExecCgroupPlacesBeforeExec(t *testing.T, traced bool) {
	withTestCgroups(t, traced)
	h := newTestHost(t, true)
	id := h.open(execReq("/bin/sh", "-c", "cat /proc/self/cgroup; grep TracerPid /proc/self/status; ls /proc/self/fd"))
	r := h.wait(id, 10*time.Second)
	if r.err != nil || r.result["exitCode"] != 0.0 {
		t.Fatalf("result %v err %v stderr %s", r.result, r.err, r.stderr)
	}
	if !strings.Contains(string(r.stdout), "/exec-") {
		t.Fatalf("not in an exec cgroup: %s", r.stdout)
	}
	if !strings.Contains(string(r.stdout), "TracerPid:\t0\n") {
		t.Fatalf("the command is still traced: %s", r.stdout)
	}
	// ls opens its directory as the lowest free fd: 3 when the shim's pipes (3, 4) are closed.
	for _, fd := range strings.Fields(string(r.stdout)) {
		if fd == "4" {
			t.Fatalf("the command inherited one of the shim's pipes: %s", r.stdout)
		}
	}
}

// execve failing in the shim is the same EXEC_FAILED as a failed start, and its cgroup goes.
func TestExecCgroupExecFailure(t *testing.T) { bothStarts(t, testExecCgroupExecFailure) }

func testExecCgroupExecFailure(t *testing.T, traced bool) {
	dir := withTestCgroups(t, traced)
	h := newTestHost(t, true)
	id := h.open(execReq("/nonexistent/binary"))
	r := h.wait(id, 10*time.Second)
	if r.err == nil || r.err.Code != codeExecFailed || !strings.Contains(r.err.Message, "no such file") {
		t.Fatalf("want EXEC_FAILED no such file, got %v %v", r.err, r.result)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		execCgroups.sweep()
		entries, _ := os.ReadDir(dir)
		n := 0
		for _, e := range entries {
			if e.IsDir() {
				n++
			}
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec cgroups left: %v", entries)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A tree signal reaches a process that left the session and cleared its environment, and
// only once (SIGTERM here: the exec's shell traps nothing and dies of it).
func TestExecCgroupTreeSignal(t *testing.T) { bothStarts(t, execCgroupTreeSignal) }

func execCgroupTreeSignal(t *testing.T, traced bool) {
	withTestCgroups(t, traced)
	marker := fmt.Sprintf("1001.%d", os.Getpid())
	h := newTestHost(t, true)
	id := h.open(map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c",
		"( setsid sh -c 'exec env -i sleep " + marker + "' & ); sleep 1000"}, "timeoutMs": 20000})
	waitStarted(t, h, id)
	deadline := time.Now().Add(5 * time.Second)
	for len(processesWithArg(marker)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the detached sleep did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := json.Marshal(map[string]any{"signal": "SIGTERM", "tree": true})
	h.send(frameControl, id, b)
	r := h.wait(id, 10*time.Second)
	if r.err != nil || r.result["signal"] != "SIGTERM" {
		t.Fatalf("result %v err %v", r.result, r.err)
	}
	for time.Now().Before(deadline) && len(processesWithArg(marker)) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if left := processesWithArg(marker); len(left) > 0 {
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("the detached process did not get the tree signal: %v", left)
	}
}
