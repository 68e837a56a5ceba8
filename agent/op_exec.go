package main

// exec: run a process, stream its output, answer with exit status and resource usage.

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// defaultMaxOutputBytes caps each of stdout and stderr when the request names no cap.
	defaultMaxOutputBytes = 1 << 20
	maxArgv               = 4096
	drainAfterExit        = 200 * time.Millisecond
)

type ttySize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

type execRequest struct {
	Argv           []string          `json:"argv"`
	Env            map[string]string `json:"env"`
	Cwd            string            `json:"cwd"`
	UID            *int              `json:"uid"`
	GID            *int              `json:"gid"`
	TimeoutMs      int64             `json:"timeoutMs"`
	MaxOutputBytes *int64            `json:"maxOutputBytes"`
	Stdin          bool              `json:"stdin"`
	TTY            *ttySize          `json:"tty"`
	// Files are written before the process starts: a snippet and its run in one round trip.
	Files []execFile `json:"files"`
	// Fork: a runner's run (zygote_linux.go) is forked or refused (NOT_FORKABLE), never run as a
	// plain exec of the runner.
	Fork bool `json:"fork"`
}

type execFile struct {
	Path string `json:"path"`
	Data []byte `json:"data"` // base64 in JSON
	Mode *int   `json:"mode"`
}

type execResult struct {
	ExitCode        *int    `json:"exitCode"`
	Signal          *string `json:"signal"`
	TimedOut        bool    `json:"timedOut"`
	DurationMs      float64 `json:"durationMs"`
	CPUUserMs       float64 `json:"cpuUserMs"`
	CPUSystemMs     float64 `json:"cpuSystemMs"`
	PeakMemoryBytes int64   `json:"peakMemoryBytes"`
	OutputTruncated bool    `json:"outputTruncated"`
	// Bytes of each stream dropped between its head and its tail (output_cap.go).
	StdoutDroppedBytes int64 `json:"stdoutDroppedBytes"`
	StderrDroppedBytes int64 `json:"stderrDroppedBytes"`
}

func opExec(c *conn, s *stream, raw json.RawMessage) (any, error) {
	var req execRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, newOpError(codeBadRequest, "exec request: %v", err)
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	if mode, program := theZygote.takes(&req); mode != notTaken {
		return theZygote.run(c, s, &req, mode, program)
	} else if req.Fork && (theZygote == nil || theZygote.isDead()) {
		return nil, newOpError(codeForkRefused, "fork run: this sandbox has no zygote (any more)")
	} else if req.Fork {
		return nil, newOpError(codeNotForkable, "this runner cannot fork %q (nothing of it ran): run it in a sandbox of its own", req.Argv[0])
	}
	if p := takePrestart(&req); p != nil {
		return p.adopt(s, &req)
	}
	for _, f := range req.Files {
		if err := writeExecFile(f); err != nil {
			return nil, err
		}
	}
	cmd, err := req.command(s.id)
	if err != nil {
		return nil, err
	}
	run, err := startExec(c, s, cmd, &req)
	if err != nil {
		return nil, err
	}
	return run.finish()
}

func (r *execRequest) validate() error {
	if len(r.Argv) == 0 || len(r.Argv) > maxArgv {
		return newOpError(codeBadRequest, "argv must have 1 to %d entries", maxArgv)
	}
	if r.Argv[0] == "" {
		return newOpError(codeBadRequest, "argv[0] is empty")
	}
	for _, a := range r.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return newOpError(codeBadRequest, "argv contains a NUL byte")
		}
	}
	for k, v := range r.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return newOpError(codeBadRequest, "env name %q is invalid (no '=' or NUL allowed)", k)
		}
	}
	if r.TimeoutMs < 0 || (r.MaxOutputBytes != nil && *r.MaxOutputBytes < 0) {
		return newOpError(codeBadRequest, "timeoutMs and maxOutputBytes must not be negative")
	}
	return nil
}

// command builds the exec.Cmd; uid/gid are only set when they differ from ours because
// setgroups/setuid need capabilities the namespace sandbox does not have.
func (r *execRequest) command(id uint32) (*exec.Cmd, error) {
	uid, gid := cfg.execUID, cfg.execGID
	if r.UID != nil {
		uid = *r.UID
	}
	if r.GID != nil {
		gid = *r.GID
	}
	env := r.environ(uid, id)
	path, err := lookPath(r.Argv[0], env)
	if err != nil {
		return nil, err
	}
	cwd := r.Cwd
	if cwd == "" {
		cwd = cfg.workdir
	}
	cmd := &exec.Cmd{Path: path, Args: r.Argv, Env: env, Dir: cwd, SysProcAttr: &syscall.SysProcAttr{}}
	if uid != os.Getuid() || gid != os.Getgid() {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	return cmd, nil
}

func (r *execRequest) environ(uid int, id uint32) []string {
	home := cfg.workdir
	if uid == 0 && !cfg.namespaceMode {
		home = "/root"
	}
	m := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": home, "LANG": "C.UTF-8",
	}
	if r.TTY != nil {
		m["TERM"] = "xterm-256color"
	}
	for k, v := range r.Env {
		m[k] = v
	}
	m[execIDEnv] = strconv.FormatUint(uint64(id), 10) // not overridable: tree kill relies on it
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// lookPath searches the exec's own PATH, not the agent's.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathVar := ""
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			pathVar = kv[5:]
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", newOpError(codeExecFailed, "%s: command not found in PATH", name)
}

// startError maps a failed start to the protocol: a uid we cannot switch to is the caller's
// mistake (BAD_REQUEST), everything else is EXEC_FAILED.
func startError(cmd *exec.Cmd, err error) error {
	cred := cmd.SysProcAttr.Credential
	if cred != nil && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
		if cfg.namespaceMode {
			return newOpError(codeBadRequest, "cannot run as uid %d: the namespace backend maps only one uid (%d); omit uid/gid", cred.Uid, os.Getuid())
		}
		return newOpError(codeBadRequest, "cannot switch to uid %d gid %d: %v", cred.Uid, cred.Gid, err)
	}
	if e := cwdError(cmd, err); e != nil {
		return e
	}
	return newOpError(codeExecFailed, "%s: %v", cmd.Args[0], unwrapPathError(err))
}

// cwdError tells a bad working directory from a bad program: the child's chdir and its execve
// both fail with ENOENT (or EACCES), which alone would blame the program ("/bin/sh: no such file",
// "permission denied"). Looked at only after a failed start, so a good exec pays nothing for it.
func cwdError(cmd *exec.Cmd, err error) *opError {
	dir := cmd.Dir
	if dir == "" {
		return nil
	}
	if errors.Is(err, syscall.EACCES) {
		uid, gid := os.Getuid(), os.Getgid()
		if c := cmd.SysProcAttr.Credential; c != nil {
			uid, gid = int(c.Uid), int(c.Gid)
		}
		if blocked := unsearchable(dir, uid, gid); blocked != "" {
			return newOpError(codePermissionDenied, "cwd %s: the exec user (uid %d) may not enter %s; pass a directory it can enter, e.g. /workspace or /tmp", dir, uid, blocked)
		}
		return nil
	}
	if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	st, serr := os.Stat(dir)
	switch {
	case serr != nil && (errors.Is(serr, syscall.ENOENT) || errors.Is(serr, syscall.ENOTDIR)):
		return newOpError(codeCwdNotFound, "cwd %s does not exist in the sandbox: create it first (mkdir -p) or pass an existing directory", dir)
	case serr == nil && !st.IsDir():
		return newOpError(codeCwdNotFound, "cwd %s is not a directory", dir)
	}
	return nil
}

// unsearchable returns the first directory on the way to dir (dir included) that uid/gid may not
// search by its mode bits, or "" when every one may be entered. Root passes everywhere; the
// supplementary groups are the agent's own (execs never set them), so only gid is considered.
func unsearchable(dir string, uid, gid int) string {
	if uid == 0 {
		return ""
	}
	path := "/"
	for _, part := range append([]string{""}, strings.Split(strings.Trim(filepath.Clean(dir), "/"), "/")...) {
		path = filepath.Join(path, part)
		st, err := os.Stat(path)
		if err != nil {
			return ""
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return ""
		}
		var bit os.FileMode = 0o001
		switch {
		case int(sys.Uid) == uid:
			bit = 0o100
		case int(sys.Gid) == gid:
			bit = 0o010
		}
		if st.Mode().Perm()&bit == 0 {
			return path
		}
	}
	return ""
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
