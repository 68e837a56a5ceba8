package main

import (
	"runtime"
	"sync"
	"syscall"
)

// reserveThreads makes the Go runtime create n OS threads now and keep them idle. Threads count
// against the sandbox's pids limit: under a fork bomb the runtime could otherwise fail to create
// one when it needs it, and a Go program that cannot create a thread dies, taking PID 1 and the
// whole sandbox with it. The runtime never destroys idle threads, so they stay available.
func reserveThreads(n int) {
	var ready, release sync.WaitGroup
	ready.Add(n)
	release.Add(1)
	var done sync.WaitGroup
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			ready.Done()
			release.Wait()
			// A short blocking syscall on the locked thread, then hand the thread back to the pool.
			ts := syscall.Timespec{Nsec: 1000}
			_ = syscall.Nanosleep(&ts, nil)
			runtime.UnlockOSThread()
		}()
	}
	ready.Wait()
	release.Done()
	done.Wait()
}
