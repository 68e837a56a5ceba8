package main

import (
	"reflect"
	"testing"
)

func TestParseModulesOrder(t *testing.T) {
	got, err := parseModulesOrder("virtio_ring.ko\nvirtio_blk.ko 2\n\nvsock.ko 19\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []guestModule{{"virtio_ring.ko", 0}, {"virtio_blk.ko", 2}, {"vsock.ko", 19}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"vsock.ko x", "vsock.ko 0", "vsock.ko 19 extra"} {
		if _, err := parseModulesOrder(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestParseBootParams(t *testing.T) {
	cases := []struct {
		cmdline string
		want    bootParams
	}{
		{"console=ttyS0 kiln.disk_mib=512 kiln.exec_uid=0 -- --init", bootParams{diskMib: 512, execUID: 0}},
		{"kiln.panic=1", bootParams{diskMib: initDefaultDisk, execUID: initDefaultUID, panic: true}},
		{"kiln.disk_mib=-3 kiln.exec_uid=x", bootParams{diskMib: initDefaultDisk, execUID: initDefaultUID}},
		{"kiln.workspace=ro", bootParams{diskMib: initDefaultDisk, execUID: initDefaultUID, workspace: "ro"}},
		{"kiln.workspace=rw", bootParams{diskMib: initDefaultDisk, execUID: initDefaultUID, workspace: "rw"}},
		{"kiln.workspace=yes", bootParams{diskMib: initDefaultDisk, execUID: initDefaultUID}},
	}
	for _, tc := range cases {
		if got := parseBootParams(tc.cmdline); got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.cmdline, got, tc.want)
		}
	}
}
