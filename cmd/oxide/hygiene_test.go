package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/testkit"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

// localRun is an `oxide run` process (this test binary as oxide, as in
// the scripts) in a workspace and with a TMPDIR of its own.
type localRun struct {
	ws, tmp string
	cmd     *exec.Cmd
	exited  chan error // receives Wait's result
}

// startRun starts `oxide run ARGS pipeline.yaml` on pipeline, its stdout
// and stderr connected as the caller set them in prepare.
func startRun(t *testing.T, pipeline string, prepare func(*exec.Cmd), args ...string) *localRun {
	t.Helper()
	r := &localRun{ws: t.TempDir(), tmp: t.TempDir(), exited: make(chan error, 1)}
	if err := os.WriteFile(filepath.Join(r.ws, "pipeline.yaml"), []byte(pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command("oxide", append(append([]string{"run"}, args...), "pipeline.yaml")...)
	r.cmd.Dir = r.ws
	r.cmd.Env = append(os.Environ(), "TMPDIR="+r.tmp, "NO_COLOR=1")
	prepare(r.cmd)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() { r.cmd.Process.Kill() })
	return r
}

// started waits for the step to create the file started.
func (r *localRun) started(t *testing.T) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "the step to start", func() bool {
		_, err := os.Stat(filepath.Join(r.ws, "started"))
		return err == nil
	})
}

// pid reads the pid that the step wrote to file.
func (r *localRun) pid(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.ws, file))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// interruptTwice sends SIGINT, waits for oxide to say on stderr that it is
// cancelling the run, sends SIGINT again and checks that oxide exits 130.
func (r *localRun) interruptTwice(t *testing.T, stderr io.Reader) {
	t.Helper()
	cancelling := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(stderr)
		for lines.Scan() {
			if strings.Contains(lines.Text(), "cancelling the run") {
				close(cancelling)
			}
		}
	}()
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-cancelling:
	case <-time.After(10 * time.Second):
		t.Fatal("no cancellation after the first interrupt")
	}
	r.cmd.Process.Signal(os.Interrupt)
	if code := r.wait(t); code != exitInterrupted {
		t.Errorf("exit status %d, want %d", code, exitInterrupted)
	}
}

// wait waits for oxide to exit and returns its exit status.
func (r *localRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-r.exited:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatal("oxide did not exit")
		return -1
	}
}

// clean checks that the steps' processes are gone and that oxide left
// nothing in its TMPDIR.
func (r *localRun) clean(t *testing.T, pids ...int) {
	t.Helper()
	testkit.Until(t, 10*time.Second, func() (bool, string) {
		for _, pid := range pids {
			if !testkit.Exited(pid) {
				return false, "step process " + strconv.Itoa(pid) + " still running"
			}
		}
		return true, ""
	})
	entries, err := os.ReadDir(r.tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "oxide-") {
			t.Errorf("left in TMPDIR: %s", e.Name())
		}
	}
}

// TestSecondInterruptKillsEveryStep: the first Ctrl-C's SIGTERM is ignored
// by the step and its background child, and the grace period outlasts the
// test, so only the second Ctrl-C's SIGKILL can stop them.
func TestSecondInterruptKillsEveryStep(t *testing.T) {
	t.Parallel()
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	r := startRun(t, `version: "1"
name: stubborn
stages:
  - name: long
    steps:
      - name: wait
        run: |
          trap '' TERM
          sleep 300 &
          echo $! > child.pid
          echo $$ > shell.pid
          touch started
          wait
`, func(c *exec.Cmd) { c.Stderr = w }, "--grace", "1h")
	w.Close()
	r.started(t)
	shell, child := r.pid(t, "shell.pid"), r.pid(t, "child.pid")
	r.interruptTwice(t, stderr)
	r.clean(t, shell, child)
}

// TestClosedStdoutCancelsTheRun: as `oxide run | head`, with a step that
// prints more than the pipe holds: the write that fails cancels the run,
// which cleans up and exits 141.
func TestClosedStdoutCancelsTheRun(t *testing.T) {
	t.Parallel()
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, `version: "1"
name: chatty
stages:
  - name: print
    steps:
      - name: lines
        run: |
          sleep 300 &
          echo $! > child.pid
          touch started
          seq 1000000
          wait
`, func(c *exec.Cmd) { c.Stdout = w })
	w.Close()
	// Read up to the step's first line, so that the step is running,
	// then stop reading.
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && !strings.HasSuffix(lines.Text(), "] 1") {
	}
	stdout.Close()
	r.started(t)
	child := r.pid(t, "child.pid")
	if code := r.wait(t); code != exitStdoutClosed {
		t.Errorf("exit status %d, want %d", code, exitStdoutClosed)
	}
	r.clean(t, child)
}

// TestSecondInterruptRemovesContainers: a container step that ignores
// SIGTERM; the second Ctrl-C removes its container before oxide exits.
func TestSecondInterruptRemovesContainers(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t, cli)
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	r := startRun(t, `version: "1"
name: stubborn-container
environment:
  type: container
  container:
    image: `+image+`
stages:
  - name: long
    steps:
      - name: wait
        run: |
          trap '' TERM
          sleep 300 &
          touch started
          wait
`, func(c *exec.Cmd) { c.Stderr = w }, "--grace", "1h")
	w.Close()
	r.started(t)
	host, _ := os.Hostname()
	owner := client.Filters{}.Add("label", docker.LabelOwner+"=local:"+host+":"+strconv.Itoa(r.cmd.Process.Pid))
	list := func() int {
		cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: owner})
		if err != nil {
			t.Fatal(err)
		}
		return len(cs.Items)
	}
	if n := list(); n != 1 {
		t.Fatalf("%d containers of the run, want 1", n)
	}
	r.interruptTwice(t, stderr)
	if n := list(); n != 0 {
		t.Errorf("%d containers of the run left", n)
	}
	r.clean(t)
}
