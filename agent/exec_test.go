package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func execReq(argv ...string) map[string]any {
	return map[string]any{"op": "exec", "argv": argv}
}

func TestExec(t *testing.T) {
	h := newTestHost(t, true)
	cases := []struct {
		name     string
		req      map[string]any
		stdout   string
		stderr   string
		exitCode any
		signal   any
		errCode  string
		extra    func(t *testing.T, r reply)
	}{
		{name: "exit code", req: execReq("/bin/sh", "-c", "exit 3"), exitCode: 3.0, signal: nil},
		{name: "stdout and stderr apart", req: execReq("/bin/sh", "-c", "echo out; echo err >&2"), stdout: "out\n", stderr: "err\n", exitCode: 0.0},
		{name: "PATH lookup and env", req: map[string]any{"op": "exec", "argv": []string{"sh", "-c", "echo $K $LANG $KILN_EXEC_ID"}, "env": map[string]string{"K": "v", "KILN_EXEC_ID": "forged"}},
			exitCode: 0.0, extra: func(t *testing.T, r reply) {
				if !strings.HasPrefix(string(r.stdout), "v C.UTF-8 ") || strings.Contains(string(r.stdout), "forged") {
					t.Fatalf("stdout %q", r.stdout)
				}
			}},
		{name: "killed by signal", req: execReq("/bin/sh", "-c", "kill -TERM $$"), exitCode: nil, signal: "SIGTERM"},
		{name: "SIGPIPE is default in children", req: execReq("/bin/sh", "-c", "yes | head -c 3"), stdout: "y\ny", exitCode: 0.0},
		{name: "output cap", req: map[string]any{"op": "exec", "argv": []string{"head", "-c", "100000", "/dev/zero"}, "maxOutputBytes": 1000},
			exitCode: 0.0, extra: func(t *testing.T, r reply) {
				if len(r.stdout) != 1000 || r.result["outputTruncated"] != true {
					t.Fatalf("got %d bytes, truncated=%v", len(r.stdout), r.result["outputTruncated"])
				}
			}},
		{name: "stdout and stderr have a cap each", req: map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c", "head -c 5000 /dev/zero; echo boom >&2"}, "maxOutputBytes": 1000},
			stderr: "boom\n", exitCode: 0.0, extra: func(t *testing.T, r reply) {
				if len(r.stdout) != 1000 || r.result["stdoutDroppedBytes"] != 4000.0 || r.result["stderrDroppedBytes"] != 0.0 {
					t.Fatalf("got %d bytes, result %v", len(r.stdout), r.result)
				}
			}},
		{name: "a truncated stream keeps its head and its tail", req: map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c", "seq 1 100000; echo END"}, "maxOutputBytes": 1000},
			exitCode: 0.0, extra: func(t *testing.T, r reply) {
				if len(r.stdout) != 1000 || !strings.HasPrefix(string(r.stdout), "1\n2\n3\n") || !strings.HasSuffix(string(r.stdout), "99999\n100000\nEND\n") {
					t.Fatalf("got %d bytes: %q ... %q", len(r.stdout), r.stdout[:20], r.stdout[len(r.stdout)-20:])
				}
				var head int
				for _, f := range r.frames {
					if f.Type == frameStdout {
						head += len(f.Payload)
						continue
					}
					if f.Type == frameEvent && strings.Contains(string(f.Payload), `"truncated"`) {
						want := fmt.Sprintf(`"droppedBytes":%d`, 588899-1000)
						if head != 500 || !strings.Contains(string(f.Payload), want) || !strings.Contains(string(f.Payload), `"stream":"stdout"`) {
							t.Fatalf("event %s after %d head bytes, want %s after 500", f.Payload, head, want)
						}
						return
					}
				}
				t.Fatal("no truncated event between head and tail")
			}},
		{name: "rusage", req: execReq("/bin/sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"), exitCode: 0.0,
			extra: func(t *testing.T, r reply) {
				if r.result["cpuUserMs"].(float64) <= 0 || r.result["peakMemoryBytes"].(float64) <= 0 || r.result["durationMs"].(float64) <= 0 {
					t.Fatalf("usage missing: %v", r.result)
				}
			}},
		{name: "not found", req: execReq("no-such-command-kiln"), errCode: codeExecFailed},
		{name: "not executable", req: execReq("/etc/hostname"), errCode: codeExecFailed},
		{name: "missing cwd", req: map[string]any{"op": "exec", "argv": []string{"true"}, "cwd": "/nonexistent-kiln"}, errCode: codeCwdNotFound},
		{name: "cwd is a file", req: map[string]any{"op": "exec", "argv": []string{"true"}, "cwd": "/etc/hostname"}, errCode: codeCwdNotFound},
		{name: "missing program in a good cwd", req: map[string]any{"op": "exec", "argv": []string{"/nonexistent-kiln/prog"}, "cwd": "/"}, errCode: codeExecFailed},
		{name: "empty argv", req: map[string]any{"op": "exec", "argv": []string{}}, errCode: codeBadRequest},
		{name: "tty", req: map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c", "tty >/dev/null && echo $TERM && stty size"}, "tty": map[string]int{"cols": 100, "rows": 30}},
			stdout: "xterm-256color\r\n30 100\r\n", exitCode: 0.0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.wait(h.open(c.req), 10*time.Second)
			if c.errCode != "" {
				if r.err == nil || r.err.Code != c.errCode {
					t.Fatalf("want ERROR %s, got %v %v", c.errCode, r.err, r.result)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("error: %v", r.err)
			}
			if r.result["exitCode"] != c.exitCode || r.result["signal"] != c.signal {
				t.Fatalf("exit %v signal %v, want %v %v", r.result["exitCode"], r.result["signal"], c.exitCode, c.signal)
			}
			if (c.stdout != "" && string(r.stdout) != c.stdout) || (c.stderr != "" && string(r.stderr) != c.stderr) {
				t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
			}
			if r.pid <= 0 {
				t.Fatal("no started event")
			}
			if c.extra != nil {
				c.extra(t, r)
			}
		})
	}
}

func TestExecStdin(t *testing.T) {
	h := newTestHost(t, true)
	id := h.open(map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c", "cat; echo err >&2"}, "stdin": true})
	h.send(frameStdin, id, []byte("hi\n"))
	h.send(frameStdin, id, []byte("there\n"))
	h.send(frameEOF, id, nil)
	r := h.wait(id, 10*time.Second)
	if string(r.stdout) != "hi\nthere\n" || string(r.stderr) != "err\n" || r.result["exitCode"] != 0.0 {
		t.Fatalf("stdout %q stderr %q result %v err %v", r.stdout, r.stderr, r.result, r.err)
	}
}

// A double-forked, setsid'd tree holding the output pipe open must die on timeout, and the
// result must not wait for it beyond the drain window.
func TestExecTimeoutKillsTree(t *testing.T) {
	h := newTestHost(t, true)
	start := time.Now()
	id := h.open(map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c",
		"setsid sh -c 'sleep 1000 & sleep 1000' & (sleep 1000 &) ; sleep 1000"}, "timeoutMs": 300})
	r := h.wait(id, 10*time.Second)
	if r.err != nil || r.result["timedOut"] != true || r.result["signal"] != "SIGKILL" {
		t.Fatalf("result %v err %v", r.result, r.err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	if left := treeMembers(0, id); len(left) > 0 {
		t.Fatalf("processes of exec %d survived: %v", id, left)
	}
}

func TestExecCancel(t *testing.T) {
	h := newTestHost(t, true)
	id := h.open(execReq("/bin/sh", "-c", "sleep 1000 & sleep 1000"))
	waitStarted(t, h, id)
	h.send(frameCancel, id, nil)
	r := h.wait(id, 10*time.Second)
	if r.err == nil || r.err.Code != codeCancelled {
		t.Fatalf("want CANCELLED, got %v %v", r.err, r.result)
	}
	if left := treeMembers(0, id); len(left) > 0 {
		t.Fatalf("survivors: %v", left)
	}
}

func TestExecControlSignal(t *testing.T) {
	h := newTestHost(t, true)
	id := h.open(execReq("sleep", "1000"))
	waitStarted(t, h, id)
	b, _ := json.Marshal(map[string]any{"signal": "SIGINT"})
	h.send(frameControl, id, b)
	r := h.wait(id, 10*time.Second)
	if r.result["signal"] != "SIGINT" {
		t.Fatalf("result %v err %v", r.result, r.err)
	}
}

func waitStarted(t *testing.T, h *testHost, id uint32) {
	t.Helper()
	select {
	case f := <-h.stream(id):
		if f.Type != frameEvent {
			t.Fatalf("first frame type %d", f.Type)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no started event")
	}
}

func TestExecConcurrent(t *testing.T) {
	h := newTestHost(t, true)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := h.wait(h.open(execReq("/bin/sh", "-c", fmt.Sprintf("echo %d; exit %d", i, i%7))), 30*time.Second)
			if string(r.stdout) != fmt.Sprintf("%d\n", i) || r.result["exitCode"] != float64(i%7) {
				errs <- fmt.Errorf("exec %d: stdout %q result %v err %v", i, r.stdout, r.result, r.err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestHandshake(t *testing.T) {
	cases := []struct {
		name string
		req  map[string]any
		code string
	}{
		{"request before hello", map[string]any{"op": "ping"}, codeHandshakeRequired},
		{"unsupported version", map[string]any{"op": "hello", "versions": []int{1, 7}}, codeUnsupportedVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newTestHost(t, false)
			if _, err := h.call(c.req); err == nil || err.Code != c.code {
				t.Fatalf("want %s, got %v", c.code, err)
			}
		})
	}
	// A sync riding on hello: bad entropy refuses the handshake; an empty one answers with the
	// sync result (nothing to reseed, no clock: the test host's clock is left alone).
	h := newTestHost(t, false)
	if _, err := h.call(map[string]any{"op": "hello", "versions": []int{protocolVersion}, "sync": map[string]any{"entropy": "not base64!"}}); err == nil || err.Code != codeBadRequest {
		t.Fatalf("hello with bad sync: want %s, got %v", codeBadRequest, err)
	}
	if _, err := h.call(map[string]any{"op": "ping"}); err == nil || err.Code != codeHandshakeRequired {
		t.Fatalf("a refused hello must not complete the handshake: %v", err)
	}
	res, err := h.call(map[string]any{"op": "hello", "versions": []int{protocolVersion}, "sync": map[string]any{"entropy": ""}})
	if err != nil || res["sync"] == nil || res["sync"].(map[string]any)["reseeded"] != false || res["sync"].(map[string]any)["clockSet"] != false {
		t.Fatalf("hello with sync: %v %v", res, err)
	}
	if res, err := h.call(map[string]any{"op": "hello", "versions": []int{protocolVersion}}); err != nil || res["sync"] != nil {
		t.Fatalf("hello without sync reports none: %v %v", res, err)
	}

	h = newTestHost(t, true)
	if res, err := h.call(map[string]any{"op": "ping"}); err != nil || res["nowMs"].(float64) < 1e12 {
		t.Fatalf("ping: %v %v", res, err)
	}
	if _, err := h.call(map[string]any{"op": "nope"}); err == nil || err.Code != codeBadRequest {
		t.Fatalf("unknown op: %v", err)
	}
}

// Files sent with an exec are written before the process starts, inside the root, and an escaping
// path fails the exec without running anything.
func TestExecWithFiles(t *testing.T) {
	h := newTestHost(t, true)
	// Tests run with the sandbox root at cfg.root, so the program reads it there.
	id := h.open(map[string]any{"op": "exec", "argv": []string{"/bin/cat", filepath.Join(cfg.root, "ef/main.txt")},
		"files": []map[string]any{{"path": "/ef/main.txt", "data": []byte("written first\n")}}})
	r := h.wait(id, 10*time.Second)
	if string(r.stdout) != "written first\n" || r.result["exitCode"] != 0.0 {
		t.Fatalf("stdout %q result %v err %v", r.stdout, r.result, r.err)
	}
	id = h.open(map[string]any{"op": "exec", "argv": []string{"/bin/sh", "-c", "echo ran"},
		"files": []map[string]any{{"path": "/../../escape.txt", "data": []byte("x")}}})
	r = h.wait(id, 10*time.Second)
	if r.err == nil || r.err.Code != codePathEscape || len(r.stdout) != 0 {
		t.Fatalf("want PATH_ESCAPE before running, got stdout %q err %v", r.stdout, r.err)
	}
}

// A cwd the exec user may not enter is PERMISSION_DENIED naming the directory, not EXEC_FAILED
// blaming the program; a program that is not executable in a good cwd still blames the program.
func TestExecCwdNotEnterable(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run an exec as another uid")
	}
	h := newTestHost(t, true)
	// Not t.TempDir(): it and its parent are 0700, and only private/ may be closed here.
	base, err := os.MkdirTemp("", "kiln-cwd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(base, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(private, "inner")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{private, inner} {
		_, err := h.call(map[string]any{"op": "exec", "argv": []string{"true"}, "cwd": dir, "uid": 65534})
		if err == nil || err.Code != codePermissionDenied || !strings.Contains(err.Message, "may not enter "+private) {
			t.Fatalf("cwd %s: want PERMISSION_DENIED naming %s, got %v", dir, private, err)
		}
	}
	_, opErr := h.call(map[string]any{"op": "exec", "argv": []string{"/etc/hostname"}, "cwd": "/tmp", "uid": 65534})
	if opErr == nil || opErr.Code != codeExecFailed {
		t.Fatalf("a program that is not executable: want EXEC_FAILED, got %v", opErr)
	}
}
