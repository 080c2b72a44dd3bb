package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/local"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/report"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/store"
)

// defaultPipeline is where a project keeps its pipeline.
const defaultPipeline = ".oxide-ci/pipeline.yaml"

type runFlags struct {
	local       bool
	parallel    int
	branch      string
	event       string
	sha         string
	ref         string
	vars        []string
	secrets     []string
	secretsFile string
	timeout     time.Duration
	environment string
	output      string
	workspace   string
	grace       time.Duration

	// On a server (runs.go).
	server   string
	pipeline string
	wait     bool
	watch    bool
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [FILE]",
		Short: "Run a pipeline on this machine (default " + defaultPipeline + ")",
		Long: `Run a pipeline on this machine, with no server: independent stages run
concurrently, steps in a fresh shell in the workspace, secrets masked in all
output. Exit status: 0 success, 1 failure, 2 invalid pipeline or usage,
130 interrupted, 141 stdout closed before the end (the run is cancelled).

With --server, or when a server is configured (` + envServer + ` or ` + "`oxide login`" + `)
and --local is not given, the pipeline runs on the server instead: FILE is
stored there under its name (or --pipeline names a stored pipeline), a run
is triggered and its ID and number printed. --wait waits for the run and
--watch streams its output too; both exit by its status.`,
		Args: cobra.MaximumNArgs(2), // a second one only with --server URL
		RunE: func(cmd *cobra.Command, args []string) error {
			remote, err := remoteRun(cmd, &f, &args)
			if err != nil {
				return err
			}
			if remote {
				return runRemote(cmd, args, &f)
			}
			file := defaultPipeline
			if len(args) == 1 {
				file = args[0]
			}
			return runLocal(file, &f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.local, "local", false, "run on this machine even when a server is configured")
	fl.IntVar(&f.parallel, "parallel", 0, "stage instances to run at once (default the CPU count)")
	fl.StringVar(&f.branch, "branch", "", "branch the run builds (default the checkout's)")
	fl.StringVar(&f.event, "event", "", "event the run stands for: push, pull_request, cron, manual, api, webhook (default manual)")
	fl.StringVar(&f.sha, "sha", "", "commit the run builds (default the checkout's HEAD)")
	fl.StringVar(&f.ref, "ref", "", "git ref (default refs/heads/BRANCH)")
	fl.StringArrayVar(&f.vars, "var", nil, "set a variable, `K=V` (repeatable)")
	fl.StringArrayVar(&f.secrets, "secret", nil, "provide a secret, `NAME=VALUE` (repeatable); masked in all output")
	fl.StringVar(&f.secretsFile, "secrets-file", "", "read secrets from a dotenv `FILE`")
	fl.DurationVar(&f.timeout, "timeout", 0, "override the pipeline's timeout (e.g. 10m)")
	fl.StringVar(&f.environment, "environment", "", "force every stage into this environment: host")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json (newline-delimited events)")
	fl.StringVar(&f.workspace, "workspace", "", "directory the steps run in (default the current directory)")
	fl.DurationVar(&f.grace, "grace", 10*time.Second, "time a cancelled step gets between SIGTERM and SIGKILL")
	fl.StringVar(&f.server, "server", "", "run on the server at `URL` (alone: the configured one)")
	fl.Lookup("server").NoOptDefVal = serverFlagDefault
	fl.StringVar(&f.pipeline, "pipeline", "", "on a server: run the stored pipeline `NAME` instead of a FILE")
	fl.BoolVar(&f.wait, "wait", false, "on a server: wait for the run and exit by its status")
	fl.BoolVar(&f.watch, "watch", false, "on a server: stream the run's output and exit by its status")
	return cmd
}

func runLocal(file string, f *runFlags) error {
	if f.output != "text" && f.output != "json" {
		return usageError("--output must be text or json, not %q", f.output)
	}
	if f.environment != "" && f.environment != "host" {
		return usageError("--environment can only force host here, not %q", f.environment)
	}
	vars, err := parseAssignments("--var", f.vars)
	if err != nil {
		return err
	}
	secrets, err := parseAssignments("--secret", f.secrets)
	if err != nil {
		return err
	}
	if f.secretsFile != "" {
		if err := readDotenv(f.secretsFile, secrets); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
	}
	p, err := pipeline.Load(file)
	if err != nil {
		return invalid(err)
	}
	printWarnings(p)
	ws := f.workspace
	if ws == "" {
		ws, _ = os.Getwd()
	}
	if ws, err = filepath.Abs(ws); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	trig := detectGit(ws)
	overrideGit(&trig, f)
	trig.Variables = vars
	r, err := plan.Compile(p, trig)
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", file, err)}
	}
	// Every job's temporary directory is made in this one, which every
	// way out of the run removes.
	tmp, err := os.MkdirTemp("", "oxide-local-")
	if err != nil {
		return &exitError{code: exitFailure, err: err}
	}
	defer os.RemoveAll(tmp)
	var eng *docker.Engine
	var dockerErr error
	if f.environment != "host" {
		if eng, dockerErr = connectDocker(r, f.grace, tmp); eng != nil {
			defer eng.Close()
		}
	}
	var notes []string
	if missing := local.Unsupported(r, eng != nil); len(missing) > 0 {
		if f.environment != "host" {
			why := ""
			if dockerErr != nil {
				why = "\n(" + dockerErr.Error() + ")"
			}
			return &exitError{code: exitFailure, err: fmt.Errorf("this runner cannot provide what the pipeline asks for:\n  %s%s\nrerun with --environment host to run these stages' steps on this machine",
				strings.Join(missing, "\n  "), why)}
		}
		notes = append(notes, fmt.Sprintf("--environment host: running %d stage instance(s) on this machine instead of the environment they ask for", len(missing)))
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// A closed stdout cancels the run as Ctrl-C does. Catching SIGPIPE
	// makes a write to it fail with EPIPE instead of killing oxide.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	out := &epipeWriter{w: os.Stdout, closed: func() { cancel(errStdoutClosed) }}
	var rep local.Reporter
	if f.output == "json" {
		rep = report.NewJSON(out)
	} else {
		t := report.NewText(out, useColor())
		t.Notes = notes
		rep = t
	}

	// exiting is held by what ends the process: the run's return, or a
	// second Ctrl-C, which the killed steps' return must not overtake.
	var exiting sync.Mutex
	interrupts := make(chan os.Signal, 2)
	signal.Notify(interrupts, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-interrupts:
			fmt.Fprintln(os.Stderr, "oxide: interrupted, cancelling the run (again to stop at once)")
			cancel(local.ErrInterrupted)
		case <-ctx.Done(): // stdout closed, or the run is over
		}
		<-interrupts
		exiting.Lock()
		fmt.Fprintln(os.Stderr, "oxide: interrupted again, killing every step")
		abort(eng, tmp)
		os.Exit(exitInterrupted)
	}()

	runID := store.NewID()
	res := local.Execute(ctx, runID, r, local.Options{
		Workspace: ws,
		Parallel:  f.parallel,
		Secrets:   secrets,
		LookupEnv: os.LookupEnv,
		Timeout:   f.timeout,
		NewEnvironment: func(n *plan.Node) runner.Environment {
			if e := n.Job.Environment; eng != nil && e != nil && e.Type == pipeline.EnvContainer {
				return eng.Env(fmt.Sprintf("%s-%d", runID, n.Index), e.Container, ws, registryPassword(e.Container, secrets))
			}
			return host.New(host.Options{Grace: f.grace, TempDir: tmp})
		},
	}, rep)
	exiting.Lock()
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errStdoutClosed):
		return &exitError{code: exitStdoutClosed}
	case res.Status == runner.StatusSuccess:
		return nil
	case errors.Is(cause, local.ErrInterrupted):
		return &exitError{code: exitInterrupted}
	}
	return &exitError{code: exitFailure}
}

// errStdoutClosed cancels a run whose output nobody reads any more.
var errStdoutClosed = errors.New("stdout closed")

// epipeWriter writes to w and calls closed when a write fails with EPIPE:
// the reader has gone, as with `oxide run | head -1`.
type epipeWriter struct {
	w      io.Writer
	closed func()
}

func (e *epipeWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		e.closed()
	}
	return n, err
}

// abort stops a run at once, for a second Ctrl-C: it kills every step's
// process group, removes the run's containers and its temporary
// directory.
func abort(eng *docker.Engine, tmp string) {
	host.KillAll()
	if eng != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Sweep(ctx)
	}
	os.RemoveAll(tmp)
}

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// invalid reports an invalid pipeline: its positioned messages, then exit 2.
func invalid(err error) error {
	var list pipeline.ErrorList
	if errors.As(err, &list) {
		fmt.Fprintln(os.Stderr, err)
		return &exitError{code: exitUsage}
	}
	return &exitError{code: exitUsage, err: err}
}

// parseAssignments parses K=V arguments of flag.
func parseAssignments(flag string, args []string) (map[string]string, error) {
	m := make(map[string]string, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageError("%s wants NAME=VALUE, got %q", flag, a)
		}
		m[k] = v
	}
	return m, nil
}

// useColor reports whether stdout is a terminal and NO_COLOR is unset.
func useColor() bool {
	if _, ok := os.LookupEnv("NO_COLOR"); ok {
		return false
	}
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
