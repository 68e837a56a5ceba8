package main

import "os"

// agentConfig is what the flags decide; ops read it, tests override it.
type agentConfig struct {
	execUID       int // default identity for exec
	execGID       int
	namespaceMode bool   // --setup-root: one mapped uid, no capabilities
	workdir       string // default exec cwd and HOME for non-root users
	root          string // directory that file/archive paths are resolved in
}

var cfg = agentConfig{
	execUID: os.Getuid(), execGID: os.Getgid(), workdir: "/workspace", root: "/",
}
