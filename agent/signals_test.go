package main

import (
	"bufio"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The child half of TestPID1SurvivesSignals: guard like PID 1, say so, and wait to be killed.
func init() {
	if os.Getenv("KILN_TEST_GUARDED_CHILD") == "1" {
		guardPID1()
		os.Stdout.WriteString("guarded\n")
		for {
			time.Sleep(time.Hour)
		}
	}
}

// Every signal sandbox code could send PID 1 (kill -ABRT 1, -SEGV, -QUIT, …) leaves it running.
func TestPID1SurvivesSignals(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "KILN_TEST_GUARDED_CHILD=1")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "guarded\n" {
		t.Fatalf("child said %q", line)
	}
	go func() { exited <- cmd.Wait() }()
	for _, s := range pid1Signals() {
		sig := s.(syscall.Signal)
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatalf("kill -%d: %v", sig, err)
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the guarded process died of %v (%s): %v", sig, signalName(sig), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, must := range []syscall.Signal{syscall.SIGABRT, syscall.SIGQUIT, syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL, syscall.SIGTRAP, syscall.SIGSYS, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2} {
		found := false
		for _, s := range pid1Signals() {
			found = found || s == must
		}
		if !found {
			t.Errorf("%v is not caught", must)
		}
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("the guarded process died: %v", err)
	default:
	}
}
