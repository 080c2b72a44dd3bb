// Package worker runs claimed jobs: it claims as many jobs as it has free
// slots, runs each with the runner in a fresh workspace, streams its logs
// and step progress back in batches, renews its leases with heartbeats and
// stops a job when the control plane cancels it. The server runs workers
// in-process (oxide server --agents N); agents run the same loop over gRPC.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
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

// Queue is where a worker in the server's process claims its jobs; an
// agent has none: the server pushes its jobs, and it Executes them.
type Queue interface {
	Claim(ctx context.Context, workerID string, labels []string, limit int) ([]spec.Assignment, error)
	Heartbeat(ctx context.Context, workerID string) ([]string, error)
	// Queued returns a channel closed when jobs are next queued.
	Queued() <-chan struct{}
}

// Containers makes container environments: docker.Engine.
type Containers interface {
	Env(jobID string, c *spec.Container, workspace, registryPassword string) runner.Environment
}

// ErrCancelled is the cause of a job stopped by the control plane.
var ErrCancelled = errors.New("job cancelled")

// Worker runs jobs: those it claims from a Queue (Run), or those it is
// handed (Execute).
type Worker struct {
	ID          string
	Labels      []string
	Concurrency int           // jobs at once; default 1
	Dir         string        // workspaces are made beneath it
	Poll        time.Duration // claim interval when not woken; default 1s
	Heartbeat   time.Duration // default 10s
	Grace       time.Duration // between SIGTERM and SIGKILL of a cancelled step
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

// Run claims jobs from q and runs them until ctx is done, then waits for
// the jobs it runs (they are cancelled with ctx).
func (w *Worker) Run(ctx context.Context, q Queue) error {
	w.defaults()
	if w.Concurrency <= 0 {
		w.Concurrency = 1
	}
	if w.Poll <= 0 {
		w.Poll = time.Second
	}
	if w.Heartbeat <= 0 {
		w.Heartbeat = 10 * time.Second
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		running = map[string]context.CancelCauseFunc{}
		freed   = make(chan struct{}, w.Concurrency)
	)
	defer wg.Wait()
	beat := time.NewTicker(w.Heartbeat)
	defer beat.Stop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		queued := q.Queued()
		mu.Lock()
		free := w.Concurrency - len(running)
		mu.Unlock()
		if free > 0 {
			as, err := q.Claim(ctx, w.ID, w.Labels, free)
			if err != nil && ctx.Err() == nil {
				w.Logger.Error("claim", "err", err)
			}
			for _, a := range as {
				jctx, cancel := context.WithCancelCause(ctx)
				mu.Lock()
				running[a.Lease.JobID] = cancel
				mu.Unlock()
				wg.Go(func() {
					w.execute(jctx, cancel, a)
					cancel(nil)
					mu.Lock()
					delete(running, a.Lease.JobID)
					mu.Unlock()
					freed <- struct{}{}
				})
			}
		}
		poll.Reset(w.Poll)
		select {
		case <-ctx.Done():
			return nil
		case <-queued:
		case <-freed:
		case <-poll.C:
		case <-beat.C:
			held, err := q.Heartbeat(ctx, w.ID)
			if err != nil {
				w.Logger.Warn("heartbeat", "err", err)
				continue
			}
			mu.Lock()
			for id, cancel := range running {
				if !contains(held, id) {
					cancel(fmt.Errorf("%w: the lease was taken back", ErrCancelled))
				}
			}
			mu.Unlock()
		}
	}
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
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
