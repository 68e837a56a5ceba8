package main

// The sandbox's CPUs (--cpus, namespace mode). The host puts the sandbox in a cpuset of these
// CPUs; here the agent makes everything that counts CPUs agree with it:
//
//   - sched_getaffinity (nproc, Go's runtime.NumCPU, Node's availableParallelism, Python's
//     os.sched_getaffinity): the cpuset already bounds it; the agent also sets its own affinity,
//     inherited by every exec, so the count is right even where no cpuset controller exists.
//   - glibc's sysconf(_SC_NPROCESSORS_ONLN) (Python 3.11's os.cpu_count, C programs) reads
//     /sys/devices/system/cpu/online first and falls back to /proc/stat, which lists every host
//     CPU. The sandbox's /sys is otherwise empty, so a read-only tmpfs there holding
//     online/possible/present and one cpuN directory per CPU (what _SC_NPROCESSORS_CONF counts)
//     answers first.
//   - /proc/cpuinfo (`grep -c ^processor /proc/cpuinfo`, a common make -j idiom): a read-only
//     bind of a copy holding only the sandbox's CPUs' blocks, taken at start (its "cpu MHz"
//     lines stay as they were then). /proc/stat stays the kernel's: it is live (times, counts).

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// maxCPUs bounds the CPU numbers --cpus accepts (the affinity mask's size).
const maxCPUs = 1024

// parseCPUList reads the kernel's list format ("0-3,8,10-11") into sorted, distinct CPU numbers.
func parseCPUList(s string) ([]int, error) {
	seen := map[int]bool{}
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= maxCPUs {
			return nil, fmt.Errorf("bad CPU list %q (want e.g. 0-3,8)", s)
		}
		for c := a; c <= b; c++ {
			seen[c] = true
		}
	}
	cpus := make([]int, 0, len(seen))
	for c := range seen {
		cpus = append(cpus, c)
	}
	sort.Ints(cpus)
	return cpus, nil
}

// formatCPUList writes sorted CPU numbers in the kernel's list format, ranges folded.
func formatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", cpus[i], cpus[j])
		} else {
			fmt.Fprintf(&b, "%d", cpus[i])
		}
		i = j + 1
	}
	return b.String()
}

// setAffinity restricts this process (and what it later starts) to cpus.
func setAffinity(cpus []int) error {
	var mask [maxCPUs / 64]uint64
	for _, c := range cpus {
		mask[c/64] |= 1 << (uint(c) % 64)
	}
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// mountSysCPUs mounts a read-only tmpfs on sysDir describing only cpus.
func mountSysCPUs(sysDir string, cpus []int) error {
	if err := os.MkdirAll(sysDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", sysDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "size=64k,nr_inodes=4096,mode=0555"); err != nil {
		return err
	}
	if err := writeSysCPUs(sysDir, cpus); err != nil {
		return err
	}
	return syscall.Mount("", sysDir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "")
}

func writeSysCPUs(sysDir string, cpus []int) error {
	dir := filepath.Join(sysDir, "devices", "system", "cpu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	list := formatCPUList(cpus) + "\n"
	for _, name := range []string{"online", "possible", "present"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(list), 0o444); err != nil {
			return err
		}
	}
	for _, c := range cpus {
		if err := os.Mkdir(filepath.Join(dir, "cpu"+strconv.Itoa(c)), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// filterCPUInfo keeps the blocks of /proc/cpuinfo whose "processor" is one of cpus.
func filterCPUInfo(text string, cpus []int) string {
	keep := map[string]bool{}
	for _, c := range cpus {
		keep[strconv.Itoa(c)] = true
	}
	var b strings.Builder
	for _, block := range strings.SplitAfter(text, "\n\n") {
		first, _, _ := strings.Cut(block, "\n")
		name, value, ok := strings.Cut(first, ":")
		if ok && strings.TrimSpace(name) == "processor" && keep[strings.TrimSpace(value)] {
			b.WriteString(block)
		}
	}
	return b.String()
}

// bindCPUInfo puts a copy of procDir/cpuinfo with only cpus on it, read-only; the copy lives in
// scratch (outside the sandbox's root).
func bindCPUInfo(procDir, scratch string, cpus []int) error {
	text, err := os.ReadFile(procDir + "/cpuinfo")
	if err != nil {
		return err
	}
	copyPath := scratch + "/cpuinfo"
	if err := os.WriteFile(copyPath, []byte(filterCPUInfo(string(text), cpus)), 0o444); err != nil {
		return err
	}
	target := procDir + "/cpuinfo"
	if err := syscall.Mount(copyPath, target, "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	return syscall.Mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "")
}
