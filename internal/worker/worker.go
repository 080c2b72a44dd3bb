// Package worker runs the jobs an agent is handed: each with the runner in
// a fresh workspace, its logs and step progress streamed back in batches,
// stopped when the control plane cancels it.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Control is what a running job reports to: the scheduler in the server's
// process, the server's connection in an agent.
type Control interface {
	Start(ctx context.Context, l spec.Lease) error
	StepUpdate(ctx context.Context, l spec.Lease, index int, r runner.StepResult) error
	AppendLogs(ctx context.Context, jobID, runID string, lines []spec.LogLine) error
	Finish(ctx context.Context, l spec.Lease, res runner.JobResult) error
	// FailLease hands a job back, unfinished, for its next attempt.
	FailLease(ctx context.Context, l spec.Lease, reason string) error
	// OnCancel calls fn when the job is cancelled; unregister stops that.
	OnCancel(jobID string, fn func(reason string)) (unregister func())
}

// Containers makes container environments: docker.Engine.
type Containers interface {
	Env(jobID string, c *spec.Container, workspace, registryPassword string) runner.Environment
}

// ErrCancelled is the cause of a job stopped by the control plane.
var ErrCancelled = errors.New("job cancelled")

// Worker runs the jobs it is handed (Execute).
type Worker struct {
	ID    string
	Dir   string        // workspaces are made beneath it
	Grace time.Duration // between SIGTERM and SIGKILL of a cancelled step
	// Runner is what jobs see as runner.*: the worker's name, OS and
	// architecture.
	Runner spec.Runner
	// HostOnly runs every job on the host, whatever environment it asks for.
	HostOnly bool
	// Containers runs the jobs that ask for a container; nil: this worker
	// has no container engine.
	Containers Containers
	Control    Control
	Logger     *slog.Logger
}

func (w *Worker) defaults() {
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
}

// Execute runs an assignment that the worker was handed to its end, and
// reports it. Cancelling ctx hands the job back for its next attempt (the
// worker shuts down); the control plane's cancel stops it.
func (w *Worker) Execute(ctx context.Context, a spec.Assignment) {
	w.defaults()
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.execute(jctx, cancel, a)
}

// execute runs one assignment to its end and reports it.
func (w *Worker) execute(ctx context.Context, cancel context.CancelCauseFunc, a spec.Assignment) {
	l := a.Lease
	log := w.Logger.With("job_id", a.Lease.JobID, "run_id", a.RunID, "stage", a.Job.Stage)
	unregister := w.Control.OnCancel(a.Lease.JobID, func(reason string) { cancel(fmt.Errorf("%w: %s", ErrCancelled, reason)) })
	defer unregister()
	// Reports must reach the control plane even when the job is cancelled.
	rctx := context.WithoutCancel(ctx)
	finish := func(res runner.JobResult) {
		if err := w.Control.Finish(rctx, l, res); err != nil {
			log.Error("finish", "err", err)
		}
	}
	// What keeps this worker from running the job is an infrastructure
	// failure, not the job's: it goes back for its next attempt, which
	// another worker may take, and fails once its attempts are spent.
	handBack := func(err error) {
		log.Warn("job handed back", "err", err)
		if err := w.Control.FailLease(rctx, l, err.Error()); err != nil {
			log.Error("hand back", "err", err)
		}
	}
	if err := resolveLocal(&a); err != nil {
		handBack(err)
		return
	}
	ws := filepath.Join(w.Dir, a.Lease.JobID)
	if err := os.MkdirAll(ws, 0o755); err != nil {
		handBack(err)
		return
	}
	defer os.RemoveAll(ws)
	env, err := w.environment(a, ws)
	if err != nil {
		handBack(err)
		return
	}
	a.Job.Workspace = ws
	a.Job.Runner = w.Runner
	if err := w.Control.Start(rctx, l); err != nil {
		log.Warn("start", "err", err) // cancelled or taken back meanwhile
		return
	}
	sink := newLogSink(rctx, w.Control, a, log)
	defer env.Cleanup(rctx)
	var res runner.JobResult
	switch err := env.Prepare(ctx); {
	case err != nil && ctx.Err() == nil:
		sink.close()
		handBack(fmt.Errorf("prepare environment: %w", err))
		return
	case err != nil:
		res = runner.JobResult{Status: runner.StatusCancelled, Err: context.Cause(ctx)}
	default:
		res = runner.Run(ctx, env, &a.Job, sink)
	}
	sink.close()
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), ErrCancelled) {
		// The worker is shutting down: the job is not done, it goes back
		// to the queue for its next attempt.
		if err := w.Control.FailLease(rctx, l, "worker "+w.ID+" shut down"); err != nil {
			log.Error("hand back", "err", err)
		}
		return
	}
	finish(res)
}

// environment returns where a job's steps run.
func (w *Worker) environment(a spec.Assignment, workspace string) (runner.Environment, error) {
	e := a.Job.Environment
	switch {
	case e == nil || e.Type == spec.EnvHost || w.HostOnly:
		return host.New(host.Options{Grace: w.Grace}), nil
	case e.Type == spec.EnvContainer && w.Containers != nil:
		return w.Containers.Env(a.Lease.JobID, e.Container, workspace, a.RegistryPassword), nil
	case e.Type == spec.EnvContainer:
		return nil, errors.New("this worker cannot run containers: it has no Docker engine")
	}
	return nil, fmt.Errorf("this worker cannot provide a %s environment", e.Type)
}

// resolveLocal resolves an assignment's LocalSecrets from this process's
// environment (provider environment).
func resolveLocal(a *spec.Assignment) error {
	var missing []string
	for _, ref := range a.LocalSecrets {
		v := os.Getenv(ref.Lookup())
		if v == "" {
			if ref.Required {
				missing = append(missing, ref.Lookup())
			}
			continue
		}
		if ref.Key != "" {
			var err error
			if v, err = secrets.Field(v, ref.Key); err != nil {
				return fmt.Errorf("secret %s %w", ref.Name, err)
			}
		}
		a.Job.Secrets = append(a.Job.Secrets, spec.Secret{Name: ref.Name, Value: v, Masked: ref.Masked, Step: ref.Step})
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing required secret from the environment: %v", missing)
	}
	return nil
}
