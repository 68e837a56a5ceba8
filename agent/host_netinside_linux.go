package main

// `kiln-agent host net-inside`: a long-lived host helper of the namespace backend. A namespace
// sandbox's agent has no capabilities left, so the host sets up the sandbox's eth0 (the veth peer
// `ip` made in the sandbox's network namespace). Spawning `nsenter ip` for that costs the service
// a fork each time; this helper takes one request per line on stdin and answers each on stdout:
//
//	{"id":1,"pid":4242,"mac":"02:…","address":"10.89.0.5","prefix":16,"gateway":"10.89.0.1"}
//	{"id":1} or {"id":1,"error":"…"}
//
// Each request runs on a thread of its own that enters the sandbox's network namespace and is
// never handed back (the thread ends with its goroutine): no thread of this process ever returns
// to the host's namespace by a second setns that could fail. It exits at end of input.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
)

type netInsideRequest struct {
	ID  uint64 `json:"id"`
	PID int    `json:"pid"`
	netConfigRequest
}

type netInsideReply struct {
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}

func serveNetInside(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	reply := func(r netInsideReply) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	}
	var wg sync.WaitGroup
	for sc.Scan() {
		var req netInsideRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			reply(netInsideReply{Error: fmt.Sprintf("request is not JSON: %v", err)})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := netInsideReply{ID: req.ID}
			if err := configureInside(req); err != nil {
				r.Error = err.Error()
			}
			reply(r)
		}()
	}
	wg.Wait()
	return sc.Err()
}

func configureInside(req netInsideRequest) error {
	nc, err := checkNetConfig(req.netConfigRequest)
	if err != nil {
		return err
	}
	if req.PID <= 1 {
		return fmt.Errorf("pid %d is not a sandbox's", req.PID)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves with this goroutine
		done <- func() error {
			ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", req.PID))
			if err != nil {
				return fmt.Errorf("the sandbox's network namespace: %w", err)
			}
			defer ns.Close()
			if _, _, e := syscall.RawSyscall(sysSetns, ns.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
				return fmt.Errorf("enter the sandbox's network namespace: %w", e)
			}
			return configureNIC(nc)
		}()
	}()
	return <-done
}
