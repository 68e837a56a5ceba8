package main

// Process-tree kill, the fallback when the agent has no exec cgroups (cgroup_linux.go; e.g. the
// agent's own tests): a process that leaves the session, the group and the environment tag
// escapes it. A process group alone misses children that called setsid or setpgid, and
// parent links break once a middle process exits (its children are reparented to us), so every
// exec also tags its environment with KILN_EXEC_ID and we kill by tag as well.

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const execIDEnv = "KILN_EXEC_ID"

const killRounds = 20

// killTree SIGKILLs the group of root, its /proc descendants and every process tagged with id,
// rescanning until a scan finds nothing alive (bounded: a fork loop cannot pin us forever).
func killTree(root int, id uint32, sig syscall.Signal) {
	if root > 0 {
		_ = syscall.Kill(-root, sig)
		_ = syscall.Kill(root, sig)
	}
	for round := 0; round < killRounds; round++ {
		victims := treeMembers(root, id)
		if len(victims) == 0 {
			return
		}
		for _, pid := range victims {
			_ = syscall.Kill(pid, sig)
		}
		if sig != syscall.SIGKILL {
			return // one pass for ordinary signals: re-sending SIGINT would change semantics
		}
		time.Sleep(time.Duration(round+1) * time.Millisecond)
	}
}

// treeMembers lists live (non-zombie) processes that descend from root or carry the exec tag.
func treeMembers(root int, id uint32) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	tag := []byte(execIDEnv + "=" + strconv.FormatUint(uint64(id), 10) + "\x00")
	parent := map[int]int{}
	var candidates []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		ppid, state, ok := procStat(pid)
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		parent[pid] = ppid
		candidates = append(candidates, pid)
	}
	var out []int
	for _, pid := range candidates {
		if descends(pid, root, parent) || hasTag(pid, tag) {
			out = append(out, pid)
		}
	}
	return out
}

func descends(pid, root int, parent map[int]int) bool {
	if root <= 0 {
		return false
	}
	for i := 0; i < 4096 && pid > 1; i++ {
		if pid == root {
			return true
		}
		pid = parent[pid]
	}
	return false
}

func hasTag(pid int, tag []byte) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	return bytes.HasPrefix(env, tag) || bytes.Contains(env, append([]byte{0}, tag...))
}

// procStat parses ppid and state from /proc/<pid>/stat; comm may contain spaces and ')'.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, false
	}
	fields := strings.Fields(s[i+2:])
	if len(fields) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	return ppid, fields[0][0], err == nil
}
