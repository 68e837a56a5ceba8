package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		cpus []int
		out  string
	}{
		{"0", []int{0}, "0"},
		{"1", []int{1}, "1"},
		{"0-3", []int{0, 1, 2, 3}, "0-3"},
		{"0,2,3,4,7", []int{0, 2, 3, 4, 7}, "0,2-4,7"},
		{"3,1,1-2\n", []int{1, 2, 3}, "1-3"},
	} {
		cpus, err := parseCPUList(tc.in)
		if err != nil || !reflect.DeepEqual(cpus, tc.cpus) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", tc.in, cpus, err, tc.cpus)
			continue
		}
		if got := formatCPUList(cpus); got != tc.out {
			t.Errorf("formatCPUList(%v) = %q; want %q", cpus, got, tc.out)
		}
	}
	for _, bad := range []string{"", "a", "-1", "3-1", "0,,1", "1024", "0-99999"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q): no error", bad)
		}
	}
}

func TestWriteSysCPUs(t *testing.T) {
	dir := t.TempDir()
	if err := writeSysCPUs(dir, []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"online", "possible", "present"} {
		b, err := os.ReadFile(filepath.Join(dir, "devices/system/cpu", name))
		if err != nil || string(b) != "1-3\n" {
			t.Errorf("%s = %q, %v", name, b, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "devices/system/cpu"))
	var cpuDirs []string
	for _, e := range entries {
		if e.IsDir() {
			cpuDirs = append(cpuDirs, e.Name())
		}
	}
	if !reflect.DeepEqual(cpuDirs, []string{"cpu1", "cpu2", "cpu3"}) {
		t.Errorf("cpu dirs = %v", cpuDirs)
	}
}

func TestFilterCPUInfo(t *testing.T) {
	in := "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n\nprocessor\t: 2\nmodel name\t: X\n\n"
	if got, want := filterCPUInfo(in, []int{1, 2}), "processor\t: 1\nmodel name\t: X\n\nprocessor\t: 2\nmodel name\t: X\n\n"; got != want {
		t.Errorf("filterCPUInfo = %q; want %q", got, want)
	}
	if got := filterCPUInfo(in, []int{7}); got != "" {
		t.Errorf("filterCPUInfo of an absent CPU = %q", got)
	}
	host, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	if got := strings.Count(filterCPUInfo(string(host), []int{0}), "processor\t:"); got != 1 {
		t.Errorf("this host's cpuinfo filtered to CPU 0 has %d processor lines", got)
	}
}
