// Package local executes a compiled run in this process, with no server:
// the run state machine (plan.Machine) decides, and this package carries
// out its actions in memory: independent stage instances run concurrently,
// each as one job of the runner in its environment, and every state change
// goes to a Reporter.
package local

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// Causes of a run's cancellation, told apart with context.Cause.
var (
	// ErrInterrupted is the cause when the user interrupts the run (Ctrl-C).
	ErrInterrupted = errors.New("interrupted")
	// ErrPipelineTimeout is the cause when the pipeline's timeout expires.
	ErrPipelineTimeout = errors.New("pipeline timed out")
)

// Options configure a local run.
type Options struct {
	Workspace string // directory the steps run in
	Parallel  int    // stage instances at once; 0: the CPU count
	// Secrets are values given on the command line or in a secrets file, by
	// name. They satisfy secret references by path or name, and every one of
	// them is masked.
	Secrets map[string]string
	// LookupEnv reads the process environment for the environment secret
	// provider.
	LookupEnv func(string) (string, bool)
	Timeout   time.Duration // overrides the pipeline's timeout when > 0
	// NewEnvironment makes the environment a stage instance runs in.
	NewEnvironment func(n *plan.Node) runner.Environment
}

// Reporter receives a run's progress. Its runner.Sink methods may be called
// from several goroutines at once; the run-level and stage-level methods
// are called from one goroutine at a time.
type Reporter interface {
	runner.Sink
	RunStarted(r *Run)
	StageStarted(r *Run, n *plan.Node)
	StageCompleted(r *Run, n *plan.Node)
	RunCompleted(r *Run)
}

// Run is a run in progress or done.
type Run struct {
	ID       string
	Plan     *plan.Run
	Started  time.Time
	Duration time.Duration
	Status   runner.Status
	Stages   []*StageResult // by node index
}

// StageResult is the outcome of one stage instance.
type StageResult struct {
	Status   runner.Status
	Reason   string // why it was skipped, cancelled or failed without running
	Started  time.Time
	Duration time.Duration
	Steps    []runner.StepResult
}

// Execute runs r to completion and returns the finished run. Cancelling
// ctx cancels the run; its cause (ErrInterrupted, ErrPipelineTimeout, …)
// sets the run's status.
func Execute(ctx context.Context, id string, r *plan.Run, opts Options, rep Reporter) *Run {
	timeout := r.Timeout
	if opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, ErrPipelineTimeout)
		defer cancel()
	}
	if opts.Parallel <= 0 {
		opts.Parallel = runtime.NumCPU()
	}
	run := &Run{ID: id, Plan: r, Started: time.Now(), Stages: make([]*StageResult, len(r.Nodes))}
	m := plan.NewMachine(id, r)
	m.Approvals = false
	e := &execution{run: run, m: m, opts: opts, rep: rep, done: make(chan done), cancels: map[int]context.CancelCauseFunc{}}
	rep.RunStarted(run)
	e.loop(ctx)
	run.Duration = time.Since(run.Started)
	rep.RunCompleted(run)
	return run
}

type execution struct {
	run     *Run
	m       *plan.Machine
	opts    Options
	rep     Reporter
	done    chan done
	queue   []plan.Start                    // started by the machine, waiting for a slot
	cancels map[int]context.CancelCauseFunc // running jobs by node
}

type done struct {
	node int
	res  runner.JobResult
}

// errStopped is the cause of a job that the machine ended while it ran.
var errStopped = errors.New("stopped")

// loop feeds the machine events until the run has finished and no job
// runs any more.
func (e *execution) loop(ctx context.Context) {
	e.apply(e.m.Next(plan.Advance{}))
	cancelled := false
	for !e.m.Done() || len(e.cancels) > 0 {
		e.startQueued(ctx)
		select {
		case d := <-e.done:
			e.finished(d)
		case <-ctx.Done():
			if cancelled { // only jobs that are stopping are left
				e.finished(<-e.done)
				continue
			}
			cancelled = true
			status := spec.StatusCancelled
			if errors.Is(context.Cause(ctx), ErrPipelineTimeout) {
				status = spec.StatusTimeout
			}
			e.apply(e.m.Next(plan.Cancel{Status: status, Reason: context.Cause(ctx).Error()}))
		}
	}
}

// apply carries out the machine's actions.
func (e *execution) apply(acts []plan.Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case plan.Start:
			e.queue = append(e.queue, a)
		case plan.End:
			res := e.run.Stages[a.Node]
			if res == nil {
				res = &StageResult{Started: time.Now()}
				e.run.Stages[a.Node] = res
			}
			res.Status, res.Reason = a.Status, a.Reason
			if cancel, ok := e.cancels[a.Node]; ok {
				cancel(fmt.Errorf("%w: %s", errStopped, a.Reason))
				continue // reported when its job returns
			}
			e.dequeue(a.Node)
			e.rep.StageCompleted(e.run, e.run.Plan.Nodes[a.Node])
		case plan.Finish:
			e.run.Status = a.Status
		}
	}
}

func (e *execution) dequeue(node int) {
	for i, s := range e.queue {
		if s.Node == node {
			e.queue = append(e.queue[:i], e.queue[i+1:]...)
			return
		}
	}
}

// startQueued starts queued jobs while there are free slots.
func (e *execution) startQueued(ctx context.Context) {
	for len(e.queue) > 0 && len(e.cancels) < e.opts.Parallel {
		s := e.queue[0]
		e.queue = e.queue[1:]
		n := e.run.Plan.Nodes[s.Node]
		jctx, cancel := context.WithCancelCause(ctx)
		e.cancels[s.Node] = cancel
		if s.Attempt == 1 {
			e.run.Stages[s.Node] = &StageResult{Status: runner.StatusRunning, Started: time.Now()}
			e.rep.StageStarted(e.run, n)
		}
		job, err := e.job(s)
		go func() { e.done <- done{s.Node, e.execute(jctx, n, job, err, s.Delay)} }()
	}
}

// finished records a job's end and tells the machine.
func (e *execution) finished(d done) {
	e.cancels[d.node](nil)
	delete(e.cancels, d.node)
	res := e.run.Stages[d.node]
	res.Duration = time.Since(res.Started)
	res.Steps = d.res.Steps
	if res.Status.Done() { // the machine ended it while it ran
		e.rep.StageCompleted(e.run, e.run.Plan.Nodes[d.node])
		return
	}
	e.apply(e.m.Next(plan.Finished{Node: d.node, Status: d.res.Status, Reason: d.res.Why(), Outputs: d.res.Outputs})) // an End of the node reports it
}

// execute runs one attempt of a stage instance's job, after delay for a
// retry. It runs on its own goroutine and touches no shared state.
func (e *execution) execute(ctx context.Context, n *plan.Node, job *spec.Job, jobErr error, delay time.Duration) runner.JobResult {
	if jobErr != nil {
		return runner.JobResult{Status: runner.StatusFailure, Err: jobErr}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return runner.JobResult{Status: runner.StatusCancelled, Err: context.Cause(ctx)}
		}
	}
	env := e.opts.NewEnvironment(n)
	defer env.Cleanup(context.WithoutCancel(ctx))
	if err := env.Prepare(ctx); err != nil {
		return runner.JobResult{Status: runner.StatusFailure, Err: fmt.Errorf("prepare environment: %w", err)}
	}
	return runner.Run(ctx, env, job, e.rep)
}

// job is the job of a started node: the machine's, with this machine's
// workspace, runner and secrets.
func (e *execution) job(s plan.Start) (*spec.Job, error) {
	job := e.m.Job(s.Node, store.NewID(), s.Attempt)
	job.Workspace = e.opts.Workspace
	job.Runner = spec.Runner{Name: "local", OS: runtime.GOOS, Arch: runtime.GOARCH}
	secrets, err := e.secrets(e.run.Plan.Nodes[s.Node].Secrets)
	job.Secrets = secrets
	return &job, err
}
