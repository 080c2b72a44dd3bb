package host_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// syncBuffer is an io.Writer that is not an *os.File, so os/exec copies
// into it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func setup(t *testing.T, grace time.Duration) (*host.Env, string) {
	t.Helper()
	env := host.New(host.Options{Grace: grace, TempDir: t.TempDir()})
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return env, t.TempDir()
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestExecExitCodeAndEnv(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, time.Second)
	var out, errOut syncBuffer
	code, err := env.Exec(t.Context(), runner.Command{
		Script: "env | sort; echo oops >&2; pwd; exit 7",
		Dir:    dir,
		Env:    []string{"A=1", "PATH=" + os.Getenv("PATH")},
		Stdout: &out,
		Stderr: &errOut,
	})
	if err != nil || code != 7 {
		t.Fatalf("Exec = %d, %v; want 7, nil", code, err)
	}
	// bash adds PWD, SHLVL and _ itself; nothing else may appear.
	var names []string
	for line := range strings.Lines(out.String()) {
		if k, _, ok := strings.Cut(line, "="); ok {
			names = append(names, k)
		}
	}
	for _, k := range names {
		switch k {
		case "A", "PATH", "PWD", "SHLVL", "_", "OLDPWD":
		default:
			t.Errorf("unexpected variable %s in the step's environment", k)
		}
	}
	if !strings.Contains(out.String(), "\n"+dir+"\n") || errOut.String() != "oops\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}
}

func TestExecSignalExitCode(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, time.Second)
	code, err := env.Exec(t.Context(), runner.Command{Script: "kill -9 $$", Dir: dir})
	if err != nil || code != 137 {
		t.Fatalf("Exec = %d, %v; want 137, nil", code, err)
	}
}

func TestExecStartFailure(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, time.Second)
	code, err := env.Exec(t.Context(), runner.Command{Script: "true", Dir: filepath.Join(dir, "missing")})
	if err == nil || code != -1 {
		t.Fatalf("Exec = %d, %v; want -1 and an error", code, err)
	}
	_, err = env.Exec(t.Context(), runner.Command{Script: "true", Shell: "cmd"})
	if !errors.Is(err, host.ErrUnknownShell) {
		t.Fatalf("Exec with shell cmd: %v, want ErrUnknownShell", err)
	}
	_, err = host.New(host.Options{}).Exec(t.Context(), runner.Command{Script: "true"})
	if !errors.Is(err, host.ErrNotPrepared) {
		t.Fatalf("Exec before Prepare: %v, want ErrNotPrepared", err)
	}
}

func TestCancelKillsTheGroup(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, 5*time.Second)
	errCause := errors.New("cancelled by test")
	ctx, cancel := context.WithCancelCause(t.Context())
	pidFile := filepath.Join(dir, "pid")
	// The grandchild holds stdout open: Exec must not wait for it.
	var out syncBuffer
	done := make(chan struct{})
	var code int
	var err error
	go func() {
		defer close(done)
		code, err = env.Exec(ctx, runner.Command{Script: "sleep 30 & echo $! > " + pidFile + "; wait", Dir: dir, Stdout: &out})
	}()
	testkit.WaitFor(t, 5*time.Second, "pid file", func() bool { b, _ := os.ReadFile(pidFile); return bytes.HasSuffix(b, []byte("\n")) }) // written whole
	pid := readPid(t, pidFile)
	cancel(errCause)
	select {
	case <-done:
	case <-time.After(4 * time.Second):
		t.Fatal("Exec did not return after cancel (SIGTERM)")
	}
	if !errors.Is(err, errCause) {
		t.Errorf("err = %v, want the context's cause", err)
	}
	if code != 128+int(syscall.SIGTERM) {
		t.Errorf("code = %d, want 143", code)
	}
	testkit.WaitFor(t, 5*time.Second, "grandchild to die", func() bool { return testkit.Exited(pid) })
}

func TestGraceThenSIGKILL(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	pidFile := filepath.Join(dir, "pid")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	code, err := env.Exec(ctx, runner.Command{
		Script: "trap '' TERM; sleep 30 & echo $! > " + pidFile + "; wait $!; sleep 30",
		Dir:    dir, Stdout: w, Stderr: w,
	})
	w.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Exec took %s", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || code != 137 {
		t.Errorf("Exec = %d, %v; want 137 and context.DeadlineExceeded", code, err)
	}
	pid := readPid(t, pidFile)
	testkit.WaitFor(t, 5*time.Second, "grandchild ignoring SIGTERM to die", func() bool { return testkit.Exited(pid) })
}

func TestGrandchildHoldingStdout(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, 300*time.Millisecond)
	// With a pipe (*os.File), Exec returns when the shell exits.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	code, err := env.Exec(t.Context(), runner.Command{Script: "sleep 30 &", Dir: dir, Stdout: w})
	w.Close()
	if err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Exec with a pipe took %s", d)
	}
	// Any other writer: os/exec stops copying after the grace period.
	var out syncBuffer
	start = time.Now()
	code, err = env.Exec(t.Context(), runner.Command{Script: "echo hi; sleep 30 &", Dir: dir, Stdout: &out})
	if err != nil || code != 0 || out.String() != "hi\n" {
		t.Fatalf("Exec = %d, %v, output %q", code, err, out.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Exec with a buffer took %s", d)
	}
}

func TestCleanupKillsLeftovers(t *testing.T) {
	t.Parallel()
	env := host.New(host.Options{TempDir: t.TempDir()})
	if err := env.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	if code, err := env.Exec(t.Context(), runner.Command{Script: "sleep 30 >/dev/null 2>&1 & echo $! > " + pidFile, Dir: dir}); err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	pid := readPid(t, pidFile)
	if testkit.Exited(pid) {
		t.Fatal("the background process died with its step")
	}
	scratch := env.ScratchDir()
	if err := env.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "background process to die", func() bool { return testkit.Exited(pid) })
	if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("job directory %s still there: %v", scratch, err)
	}
}

func TestShells(t *testing.T) {
	t.Parallel()
	env, dir := setup(t, time.Second)
	for shell, script := range map[string]string{
		"":     "[ -n \"$BASH_VERSION\" ] && echo ok",
		"bash": "set -o | grep -q 'pipefail.*on' && echo ok",
		"sh":   "case $- in *e*) echo ok;; esac",
	} {
		var out syncBuffer
		code, err := env.Exec(t.Context(), runner.Command{Script: script, Shell: shell, Dir: dir, Env: []string{"PATH=" + os.Getenv("PATH")}, Stdout: &out})
		if err != nil || code != 0 || out.String() != "ok\n" {
			t.Errorf("shell %q: %d, %v, %q", shell, code, err, out.String())
		}
	}
}
