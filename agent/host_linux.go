package main

// Host-side helpers (`kiln-agent host …`): run by the kiln service as root on the host, never in
// a sandbox. They live in the agent binary because it is the one Go program kiln ships.
//
//	kiln-agent host idmap-bind SRC DST OWNERUID:HOSTUID OWNERGID:HOSTGID
//	kiln-agent host ws-mount IMAGE MNT HOSTUID
//	kiln-agent host ws-scan UPPERDIR
//	kiln-agent host net-inside   (requests on stdin: host_netinside_linux.go)
//	kiln-agent host spawner      (starts sandboxes' bwrap: host_spawner_linux.go)

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

const hostMode = "host"

func runHost(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: kiln-agent host idmap-bind|ws-scan …")
	}
	switch args[0] {
	case "idmap-bind":
		if len(args) != 5 {
			return fmt.Errorf("usage: kiln-agent host idmap-bind SRC DST OWNERUID:HOSTUID OWNERGID:HOSTGID")
		}
		uid, err := parseIDPair(args[3])
		if err != nil {
			return fmt.Errorf("uid mapping: %w", err)
		}
		gid, err := parseIDPair(args[4])
		if err != nil {
			return fmt.Errorf("gid mapping: %w", err)
		}
		return idmapBind(args[1], args[2], uid, gid)
	case "idmap-hold":
		// internal: the short-lived child whose user namespace carries the mapping
		_, _ = os.Stdin.Read(make([]byte, 1))
		return nil
	case "ws-mount":
		if len(args) != 4 {
			return fmt.Errorf("usage: kiln-agent host ws-mount IMAGE MNT HOSTUID")
		}
		uid, err := strconv.Atoi(args[3])
		if err != nil || uid < 0 {
			return fmt.Errorf("host uid %q is not a uid", args[3])
		}
		return wsMount(args[1], args[2], uid)
	case "net-inside":
		return serveNetInside(os.Stdin, os.Stdout)
	case "spawner":
		return serveSpawner(os.Stdin, os.Stdout)
	case "ws-scan":
		if len(args) != 2 {
			return fmt.Errorf("usage: kiln-agent host ws-scan UPPERDIR")
		}
		w := bufio.NewWriterSize(os.Stdout, 64*1024)
		if err := scanUpper(args[1], w); err != nil {
			return err
		}
		return w.Flush()
	}
	return fmt.Errorf("unknown host command %q", args[0])
}

// idPair maps one id on disk (the project owner's) to one id seen through the mount.
type idPair struct{ from, to uint32 }

func parseIDPair(s string) (idPair, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return idPair{}, fmt.Errorf("%q is not FROM:TO", s)
	}
	from, err := strconv.ParseUint(a, 10, 32)
	if err != nil {
		return idPair{}, fmt.Errorf("%q: %w", s, err)
	}
	to, err := strconv.ParseUint(b, 10, 32)
	if err != nil {
		return idPair{}, fmt.Errorf("%q: %w", s, err)
	}
	return idPair{uint32(from), uint32(to)}, nil
}
