package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A stand-in for bwrap: it names itself as its "sandbox" on --info-fd 3 (a kill of the sandbox
// kills it, nothing else), waits on --block-fd 4 and on the
// agent's --await-fd 5, and reports on stderr what it saw and which descriptors it holds.
const fakeBwrap = `echo "{\"child-pid\": $$}" >&3; exec 3>&-
read -r b <&4; echo "released $b" >&2
read -r a <&5; echo "recorded $a" >&2
echo "fds $(ls /proc/self/fd | sort -n | tr '\n' ' ')" >&2
exit 7`

type spawnerProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	events chan spawnEvent
}

func startSpawner(t *testing.T) *spawnerProc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the spawner sets the child's uid and groups)")
	}
	// Its own process: the spawner reaps any child (wait4(-1)), which must not be this test's.
	cmd := exec.Command(os.Args[0], hostMode, "spawner")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	done, err := startRegistered(cmd)
	if err != nil {
		t.Fatal(err)
	}
	p := &spawnerProc{t: t, cmd: cmd, in: in, events: make(chan spawnEvent, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e spawnEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				p.events <- e
			}
		}
		close(p.events)
	}()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the spawner did not exit at end of input")
			_ = cmd.Process.Kill()
		}
	})
	return p
}

func (p *spawnerProc) send(req spawnRequest) {
	b, _ := json.Marshal(req)
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next event other than stderr, collecting the stderr text seen on the way.
func (p *spawnerProc) next(stderr *strings.Builder) spawnEvent {
	p.t.Helper()
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				p.t.Fatal("the spawner ended")
			}
			if e.Ev == "stderr" {
				stderr.WriteString(e.Data)
				continue
			}
			return e
		case <-time.After(10 * time.Second):
			p.t.Fatal("no event from the spawner")
		}
	}
}

func TestSpawnerStartsPlacesReleasesAndReports(t *testing.T) {
	p := startSpawner(t)
	dir := t.TempDir()
	procs := []string{filepath.Join(dir, "a.procs"), filepath.Join(dir, "b.procs")}
	for _, f := range procs {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.send(spawnRequest{Op: "spawn", ID: 1, Path: "/bin/sh", Argv: []string{"sh", "-c", fakeBwrap}, UID: 0, GID: 0, Setsid: true, Await: true, CgroupProcs: procs})
	var stderr strings.Builder
	e := p.next(&stderr)
	if e.Ev != "started" || e.ID != 1 || e.PID <= 0 || e.Child != e.PID {
		t.Fatalf("want started with its own pid as the sandbox's, got %+v (stderr %q)", e, stderr.String())
	}
	for _, f := range procs {
		if b, _ := os.ReadFile(f); string(b) != strconv.Itoa(e.Child) {
			t.Fatalf("%s holds %q, want the sandbox's pid written before the release", f, b)
		}
	}
	// Until recorded, the child waits on its await pipe.
	time.Sleep(100 * time.Millisecond)
	p.send(spawnRequest{Op: "recorded", ID: 1})
	for e = p.next(&stderr); e.Ev == "stderr-end"; e = p.next(&stderr) {
	}
	if e.Ev != "exit" || e.Code == nil || *e.Code != 7 {
		t.Fatalf("want exit code 7, got %+v", e)
	}
	got := stderr.String()
	for _, want := range []string{"released x\n", "recorded g\n", "fds 0 1 2 3 4 5 \n"} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr %q lacks %q (3 is ls's own, 4 and 5 the block and await pipes)", got, want)
		}
	}
}

func TestSpawnerFailuresAreReported(t *testing.T) {
	p := startSpawner(t)
	var stderr strings.Builder
	// A program that is not there.
	p.send(spawnRequest{Op: "spawn", ID: 1, Path: "/nonexistent/bwrap", Argv: []string{"bwrap"}})
	if e := p.next(&stderr); e.Ev != "error" || e.ID != 1 || !strings.Contains(e.Message, "cannot run /nonexistent/bwrap") {
		t.Fatalf("want an error naming the program, got %+v", e)
	}
	// A "bwrap" that dies before naming its sandbox: its stderr comes first, then the error, then its exit.
	p.send(spawnRequest{Op: "spawn", ID: 2, Path: "/bin/sh", Argv: []string{"sh", "-c", "echo no user namespaces >&2; exit 1"}, Await: true})
	e := p.next(&stderr)
	for e.Ev == "stderr-end" {
		e = p.next(&stderr)
	}
	if e.Ev != "error" || !strings.Contains(e.Message, "before starting the sandbox") || !strings.Contains(stderr.String(), "no user namespaces") {
		t.Fatalf("want the error after the stderr, got %+v (stderr %q)", e, stderr.String())
	}
	if e = p.next(&stderr); e.Ev != "exit" || e.Code == nil || *e.Code != 1 {
		t.Fatalf("want exit code 1, got %+v", e)
	}
	// A cgroup that cannot be entered: the child is killed, never let run.
	p.send(spawnRequest{Op: "spawn", ID: 3, Path: "/bin/sh", Argv: []string{"sh", "-c", fakeBwrap}, Await: true, CgroupProcs: []string{"/nonexistent/cgroup.procs"}})
	stderr.Reset()
	sawError, sawExit := false, false
	for !sawError || !sawExit {
		switch e := p.next(&stderr); e.Ev {
		case "error":
			sawError = strings.Contains(e.Message, "enter cgroup")
		case "exit":
			sawExit = e.Signal != nil && *e.Signal == 9
		case "started":
			t.Fatal("started although its cgroup could not be entered")
		}
	}
	if strings.Contains(stderr.String(), "released") {
		t.Fatalf("the child was let run: %q", stderr.String())
	}
}
