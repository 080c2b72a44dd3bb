// Package host is the Environment that runs steps directly on this machine,
// each step's shell in a process group of its own, so that cancellation
// (and KillAll, when the process must exit at once) reaches every process
// the step started.
package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oxide-ci/oxide/internal/runner"
)

// DefaultGrace is the time between SIGTERM and SIGKILL when Options.Grace
// is zero.
const DefaultGrace = 10 * time.Second

// ErrUnknownShell is returned by Exec for a shell the host cannot run.
var ErrUnknownShell = errors.New("unknown shell")

// ErrNotPrepared is returned by Exec before Prepare or after Cleanup.
var ErrNotPrepared = errors.New("host environment is not prepared")

// Options configure an Env.
type Options struct {
	// Grace is how long a cancelled step's process group gets between
	// SIGTERM and SIGKILL. Zero means DefaultGrace.
	Grace time.Duration
	// TempDir is where Prepare makes the job's temporary directory.
	// Empty means os.TempDir().
	TempDir string
}

// Env runs a job's steps on this machine. Prepare makes a per-job
// temporary directory for step scripts; Cleanup kills what the steps left
// running in the background and removes the directory. Exec may be called
// concurrently.
type Env struct {
	grace   time.Duration
	tempDir string

	dir     string   // per-job directory, set by Prepare
	devNull *os.File // stdin of every step
	seq     atomic.Uint64

	mu      sync.Mutex
	groups  []*group // process groups still alive when their step's shell exited
	scripts []string // script files free for reuse
}

var _ runner.Environment = (*Env)(nil)

// group is the process group of one step, named by its shell's pid.
type group struct {
	pgid   int
	reaped *atomic.Bool // the shell has been waited for
}

// live holds the process groups of every Env of this process that may
// still have processes: those of running steps and the leftovers that
// Cleanup has not killed yet.
var live = struct {
	sync.Mutex
	groups map[*group]struct{}
	killed bool // KillAll has run
}{groups: map[*group]struct{}{}}

// KillAll sends SIGKILL to the process group of every step that an Env of
// this process is running or left running, and to any step that starts
// afterwards: for a process that must exit at once, without Cleanup (a
// second Ctrl-C). It returns when the signals have been sent.
func KillAll() {
	live.Lock()
	defer live.Unlock()
	live.killed = true
	for g := range live.groups {
		killStep(g.pgid, g.reaped.Load())
	}
}

// start starts c and registers its process group. KillAll misses no step:
// one that registers after KillAll began is killed as it registers. The
// lock is not held across the fork, so that steps start in parallel.
func start(c *exec.Cmd, reaped *atomic.Bool) (*group, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	g := &group{pgid: c.Process.Pid, reaped: reaped}
	live.Lock()
	defer live.Unlock()
	live.groups[g] = struct{}{}
	if live.killed {
		killStep(g.pgid, false)
	}
	return g, nil
}

func forget(g *group) {
	live.Lock()
	delete(live.groups, g)
	live.Unlock()
}

// New returns an Env; call Prepare before Exec.
func New(opts Options) *Env {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	return &Env{grace: opts.Grace, tempDir: opts.TempDir}
}

// Prepare makes the job's temporary directory. It does nothing on an Env
// that is already prepared.
func (e *Env) Prepare(ctx context.Context) error {
	if e.dir != "" {
		return nil
	}
	dir, err := os.MkdirTemp(e.tempDir, "oxide-job-")
	if err != nil {
		return fmt.Errorf("host: prepare: %w", err)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("host: prepare: %w", err)
	}
	e.dir, e.devNull = dir, devNull
	return nil
}

// ScratchDir is the job's temporary directory; the runner keeps its
// $OXIDE_OUTPUT files there.
func (e *Env) ScratchDir() string { return e.dir }

// Cleanup kills the process groups of steps that left processes running
// (as a CI runner cleans up orphans at the end of a job) and removes the
// job's temporary directory. It is safe to call when Prepare failed.
func (e *Env) Cleanup(ctx context.Context) error {
	e.mu.Lock()
	groups, scripts := e.groups, e.scripts
	e.groups, e.scripts = nil, nil
	e.mu.Unlock()
	for _, g := range groups {
		killGroup(g.pgid)
		forget(g)
	}
	if e.devNull != nil {
		e.devNull.Close()
		e.devNull = nil
	}
	if e.dir == "" {
		return nil
	}
	dir := e.dir
	e.dir = ""
	// The files are known: removing them and the directory directly saves
	// RemoveAll's failed attempts and directory listing in the common case.
	for _, path := range scripts {
		syscall.Unlink(path)
	}
	if syscall.Rmdir(dir) == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("host: cleanup: %w", err)
	}
	return nil
}

// shells maps a step's shell to the program and its arguments before the
// script path.
var shells = map[string]struct {
	prog string
	args []string
}{
	"":       {"bash", []string{"--noprofile", "--norc", "-e", "-o", "pipefail"}},
	"bash":   {"bash", []string{"--noprofile", "--norc", "-e", "-o", "pipefail"}},
	"sh":     {"sh", []string{"-e"}},
	"python": {"python3", nil},
}

// lookPath caches exec.LookPath per program: a PATH search per step is a
// dozen stat calls that buy nothing.
var lookPath sync.Map // program → func() (string, error)

func resolve(prog string) (string, error) {
	f, ok := lookPath.Load(prog)
	if !ok {
		f, _ = lookPath.LoadOrStore(prog, sync.OnceValues(func() (string, error) { return exec.LookPath(prog) }))
	}
	return f.(func() (string, error))()
}

// Exec runs cmd's script with its shell in a new process group, with
// exactly cmd.Env as environment and stdin from /dev/null. When ctx is done
// the whole group gets SIGTERM and, after the grace period, SIGKILL.
//
// The exit code is the shell's, or 128+signal when a signal killed it. err
// is non-nil only when the step could not be started, or when ctx ended
// it: then err is context.Cause(ctx), so that callers tell a timeout from a
// cancellation.
//
// Pass *os.File pipes as cmd.Stdout and cmd.Stderr: the child then writes
// into them directly, and Exec returns as soon as the shell has exited even
// if a background process still holds them. Any other io.Writer is copied
// by os/exec, and Exec waits up to the grace period for it.
func (e *Env) Exec(ctx context.Context, cmd runner.Command) (int, error) {
	if e.dir == "" {
		return -1, ErrNotPrepared
	}
	sh, ok := shells[cmd.Shell]
	if !ok {
		return -1, fmt.Errorf("host: %w %q (want bash, sh or python)", ErrUnknownShell, cmd.Shell)
	}
	prog, err := resolve(sh.prog)
	if err != nil {
		return -1, fmt.Errorf("host: shell %s: %w", sh.prog, err)
	}
	script, err := e.writeScript(cmd.Script)
	if err != nil {
		return -1, fmt.Errorf("host: write script: %w", err)
	}
	defer e.releaseScript(script)

	args := make([]string, 0, len(sh.args)+1)
	args = append(append(args, sh.args...), script)
	c := exec.CommandContext(ctx, prog, args...)
	c.Env = cmd.Env
	if c.Env == nil {
		c.Env = []string{} // nil would mean "inherit ours"
	}
	c.Dir = cmd.Dir
	c.Stdin = e.devNull
	c.Stdout = cmd.Stdout
	c.Stderr = cmd.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = e.grace
	var cancelled, reaped atomic.Bool
	c.Cancel = func() error {
		pid := c.Process.Pid
		if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil {
			return os.ErrProcessDone
		}
		cancelled.Store(true)
		// os/exec kills only the shell when WaitDelay expires; the whole
		// group gets its SIGKILL here, also when the shell exited on
		// SIGTERM but a child ignores it.
		time.AfterFunc(e.grace, func() { killStep(pid, reaped.Load()) })
		return nil
	}

	g, err := start(c, &reaped)
	if err != nil {
		if ctx.Err() != nil {
			return -1, context.Cause(ctx)
		}
		return -1, fmt.Errorf("host: start %s: %w", sh.prog, err)
	}
	werr := c.Wait()
	reaped.Store(true)

	code := -1
	if st := c.ProcessState; st != nil {
		code = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	// Background processes of the step keep running until Cleanup (or
	// until the pending SIGKILL of a cancelled group).
	if syscall.Kill(-g.pgid, 0) == nil {
		e.mu.Lock()
		e.groups = append(e.groups, g)
		e.mu.Unlock()
	} else {
		forget(g)
	}
	if cancelled.Load() && ctx.Err() != nil {
		return code, context.Cause(ctx)
	}
	if code == -1 && werr != nil {
		return code, fmt.Errorf("host: wait: %w", werr)
	}
	return code, nil
}

// writeScript writes a step's script to a file of the job directory. Files
// are reused from step to step (a new inode per step costs more than the
// rest of starting it on some file systems); concurrent steps get
// different files.
func (e *Env) writeScript(script string) (string, error) {
	e.mu.Lock()
	var path string
	if n := len(e.scripts); n > 0 {
		path = e.scripts[n-1]
		e.scripts = e.scripts[:n-1]
	}
	e.mu.Unlock()
	flags := syscall.O_WRONLY | syscall.O_CLOEXEC
	if path == "" {
		path = filepath.Join(e.dir, "step-"+strconv.FormatUint(e.seq.Add(1), 10))
		flags |= syscall.O_CREAT | syscall.O_EXCL
	}
	// Plain syscalls: an os.File would try to register the file with the
	// poller, three more system calls for nothing.
	fd, err := syscall.Open(path, flags, 0o600)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	b := []byte(script)
	for off := 0; off < len(b); {
		n, err := syscall.Pwrite(fd, b[off:], int64(off))
		if err != nil {
			return "", &os.PathError{Op: "write", Path: path, Err: err}
		}
		off += n
	}
	// Truncating after writing, not before, keeps the file's blocks.
	if err := syscall.Ftruncate(fd, int64(len(b))); err != nil {
		return "", &os.PathError{Op: "truncate", Path: path, Err: err}
	}
	return path, nil
}

func (e *Env) releaseScript(path string) {
	e.mu.Lock()
	e.scripts = append(e.scripts, path)
	e.mu.Unlock()
}

// killStep sends SIGKILL to the process group of a step's shell pid.
// While the shell is unreaped its pid still names the group.
func killStep(pid int, reaped bool) {
	if reaped {
		killGroup(pid)
	} else {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// killGroup sends SIGKILL to process group pgid, whose leader this package
// has already reaped. While a group exists its id cannot be given to a new
// process, so a live process with pid pgid means the group is gone and the
// number reused: leave it alone.
func killGroup(pgid int) {
	if syscall.Kill(pgid, 0) == syscall.ESRCH {
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
}
