// Package local executes a planned pipeline run in this process, with no
// server: independent stage instances run concurrently, each as one job of
// the runner in its environment, and every state change goes to a Reporter.
package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/runner"
)

// Causes of a run's cancellation, told apart with context.Cause.
var (
	// ErrInterrupted is the cause when the user interrupts the run (Ctrl-C).
	ErrInterrupted = errors.New("interrupted")
	// ErrPipelineTimeout is the cause when the pipeline's timeout expires.
	ErrPipelineTimeout = errors.New("pipeline timed out")
	// errFailFast cancels the other instances of a failed matrix stage.
	errFailFast = errors.New("cancelled by fail_fast: another matrix instance failed")
)

// Options configure a local run.
type Options struct {
	Workspace string // directory the steps run in
	Parallel  int    // stage instances at once; 0: the CPU count
	Git       Git
	Variables map[string]string // --var: override pipeline and stage variables
	// Secrets are values given on the command line or in a secrets file, by
	// name. They satisfy secret references by path or name, and every one of
	// them is masked.
	Secrets map[string]string
	// LookupEnv reads the process environment for the environment secret
	// provider.
	LookupEnv func(string) (string, bool)
	Timeout   time.Duration // overrides the pipeline's timeout when > 0
	// HostOnly runs every stage on this machine whatever environment it asks
	// for (--environment host).
	HostOnly bool
	// NewEnvironment makes the environment a stage instance runs in.
	NewEnvironment func(n *plan.Node) runner.Environment
}

// Git describes the revision a run builds.
type Git struct {
	Branch, Ref, SHA, Event string
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
	Pipeline *pipeline.Pipeline
	Graph    *plan.Graph
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
	// failed is true when dependents must treat this stage as failed: it
	// failed, timed out, was cancelled, or was skipped for a failed dependency.
	failed bool
}

// Unsupported returns a message for every stage instance whose environment
// this process cannot provide, or nil when it can provide them all: the
// host always, containers when it has a container engine.
func Unsupported(p *pipeline.Pipeline, g *plan.Graph, containers bool) []string {
	var out []string
	for _, n := range g.Nodes {
		env := EnvironmentOf(p, n.Stage)
		if env == nil || env.Type == pipeline.EnvHost || env.Type == pipeline.EnvContainer && containers {
			continue
		}
		what := string(env.Type)
		switch {
		case env.Type == pipeline.EnvContainer && env.Container != nil:
			what = "container image " + env.Container.Image + " (needs a Docker engine)"
		case env.Type == pipeline.EnvNix:
			what = "nix environment (needs nix on an agent)"
		case env.Type == pipeline.EnvFirecracker:
			what = "firecracker microVM (needs a firecracker agent)"
		}
		out = append(out, fmt.Sprintf("stage %q asks for a %s", n.Name, what))
	}
	return out
}

// EnvironmentOf is where stage s of p runs: its own environment, else the
// pipeline's; nil means the host.
func EnvironmentOf(p *pipeline.Pipeline, s *pipeline.Stage) *pipeline.Environment {
	if s.Environment != nil {
		return s.Environment
	}
	return p.Environment
}

// Execute runs g to completion and returns the finished run. Cancelling ctx
// cancels the run; its cause (ErrInterrupted, ErrPipelineTimeout, …) sets
// the run's status.
func Execute(ctx context.Context, id string, p *pipeline.Pipeline, g *plan.Graph, opts Options, rep Reporter) *Run {
	timeout := p.Timeout
	if opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, ErrPipelineTimeout)
		defer cancel()
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = runtime.NumCPU()
	}
	r := &Run{ID: id, Pipeline: p, Graph: g, Started: time.Now(), Stages: make([]*StageResult, len(g.Nodes))}
	e := &execution{run: r, opts: opts, rep: rep, outputs: map[string]any{}, done: make(chan done)}
	rep.RunStarted(r)
	e.loop(ctx, parallel)
	r.Duration = time.Since(r.Started)
	r.Status = e.runStatus(ctx)
	rep.RunCompleted(r)
	return r
}

type execution struct {
	run  *Run
	opts Options
	rep  Reporter

	mu      sync.Mutex
	outputs map[string]any // steps.<id>.outputs of finished stages, for expressions

	done chan done
}

type done struct {
	node *plan.Node
	res  *StageResult
}

// loop starts every ready stage instance, within the parallel bound and
// each matrix stage's max_parallel, until all have finished.
func (e *execution) loop(ctx context.Context, parallel int) {
	g := e.run.Graph
	running := 0
	runningOf := map[string]int{}                       // stage name → running instances
	cancels := map[*plan.Node]context.CancelCauseFunc{} // running instances
	started := make([]bool, len(g.Nodes))
	for remaining := len(g.Nodes); remaining > 0; {
		for _, n := range g.Nodes {
			if started[n.Index] || !e.depsDone(n) {
				continue
			}
			if res := e.gate(ctx, n); res != nil {
				started[n.Index] = true
				remaining--
				e.finish(n, res)
				continue
			}
			if running >= parallel || (n.Source.Matrix != nil && n.Source.Matrix.MaxParallel > 0 && runningOf[n.Source.Name] >= n.Source.Matrix.MaxParallel) {
				continue
			}
			started[n.Index] = true
			running++
			runningOf[n.Source.Name]++
			jctx, cancel := context.WithCancelCause(ctx)
			cancels[n] = cancel
			started := time.Now()
			e.run.Stages[n.Index] = &StageResult{Status: runner.StatusRunning, Started: started}
			e.rep.StageStarted(e.run, n)
			job, err := e.job(n) // built here: it reads the results of other stages
			go func() { e.done <- done{n, e.execute(jctx, n, job, err, started)} }()
		}
		if running == 0 {
			if remaining > 0 { // unreachable for a validated, acyclic graph
				panic("local: no stage can start")
			}
			break
		}
		d := <-e.done
		running--
		remaining--
		runningOf[d.node.Source.Name]--
		cancels[d.node](nil)
		delete(cancels, d.node)
		e.finish(d.node, d.res)
		if m := d.node.Source.Matrix; m != nil && m.FailFast && d.res.Status == runner.StatusFailure {
			for n, cancel := range cancels {
				if n.Source == d.node.Source {
					cancel(errFailFast)
				}
			}
			for _, n := range g.Instances(d.node.Source.Name) {
				if !started[n.Index] {
					started[n.Index] = true
					remaining--
					e.finish(n, &StageResult{Status: runner.StatusCancelled, Reason: errFailFast.Error(), failed: true})
				}
			}
		}
	}
}

func (e *execution) depsDone(n *plan.Node) bool {
	for _, d := range n.Deps {
		if r := e.run.Stages[d.Index]; r == nil || r.Status == runner.StatusRunning {
			return false
		}
	}
	return true
}

// gate decides whether n runs. It returns nil when n should start, else
// the result of a stage that does not run.
func (e *execution) gate(ctx context.Context, n *plan.Node) *StageResult {
	if ctx.Err() != nil {
		return &StageResult{Status: cancelStatus(ctx), Reason: "not started: " + context.Cause(ctx).Error(), failed: true}
	}
	var failedDep *plan.Node
	for _, d := range n.Deps {
		if e.run.Stages[d.Index].failed {
			failedDep = d
			break
		}
	}
	d := plan.Gate(n, failedDep, e.values(n), e.opts.Workspace)
	switch d.Verdict {
	case plan.Skip:
		return &StageResult{Status: runner.StatusSkipped, Reason: d.Reason}
	case plan.SkipFailed:
		return &StageResult{Status: runner.StatusSkipped, Reason: d.Reason, failed: true}
	case plan.Fail:
		return &StageResult{Status: runner.StatusFailure, Reason: d.Reason, failed: true}
	case plan.AwaitApproval:
		return &StageResult{Status: runner.StatusSkipped, Reason: "needs an approval, which only a server can record"}
	}
	return nil
}

func (e *execution) finish(n *plan.Node, res *StageResult) {
	if res.Started.IsZero() {
		res.Started = time.Now()
	}
	switch res.Status {
	case runner.StatusFailure, runner.StatusTimeout, runner.StatusCancelled:
		res.failed = true
	}
	e.run.Stages[n.Index] = res
	e.rep.StageCompleted(e.run, n)
}

// execute runs one stage instance as a job, with the stage's retry. It
// runs on its own goroutine and touches no shared state but the outputs.
func (e *execution) execute(ctx context.Context, n *plan.Node, job *runner.Job, jobErr error, started time.Time) *StageResult {
	res := &StageResult{Started: started}
	defer func() { res.Duration = time.Since(started) }()
	if jobErr != nil {
		res.Status, res.Reason = runner.StatusFailure, jobErr.Error()
		return res
	}
	env := e.opts.NewEnvironment(n)
	attempts, delay := 1, time.Duration(0)
	if r := n.Stage.Retry; r != nil && r.MaxAttempts > 1 {
		attempts, delay = r.MaxAttempts, r.Delay
	}
	var jr runner.JobResult
	for attempt := 1; ; attempt++ {
		jr = runJob(ctx, env, job, e.rep)
		if jr.Err != nil {
			res.Status, res.Reason = runner.StatusFailure, jr.Err.Error()
			return res
		}
		if jr.Status != runner.StatusFailure || attempt == attempts || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		if n.Stage.Retry.ExponentialBackoff {
			delay *= 2
		}
	}
	e.mu.Lock()
	for id, out := range jr.Outputs {
		o := make(map[string]any, len(out))
		for k, v := range out {
			o[k] = v
		}
		e.outputs[id] = map[string]any{"outputs": o}
	}
	e.mu.Unlock()
	res.Status, res.Steps = jr.Status, jr.Steps
	if jr.Status == runner.StatusCancelled && errors.Is(context.Cause(ctx), errFailFast) {
		res.Reason = errFailFast.Error()
	}
	return res
}

// runJob prepares the environment, runs the job and cleans up. An
// environment that cannot be prepared is an infrastructure failure, in
// JobResult.Err.
func runJob(ctx context.Context, env runner.Environment, job *runner.Job, sink runner.Sink) runner.JobResult {
	defer env.Cleanup(context.WithoutCancel(ctx))
	if err := env.Prepare(ctx); err != nil {
		return runner.JobResult{Status: runner.StatusFailure, Err: fmt.Errorf("prepare environment: %w", err)}
	}
	return runner.Run(ctx, env, job, sink)
}

func (e *execution) runStatus(ctx context.Context) runner.Status {
	if err := context.Cause(ctx); err != nil {
		return cancelStatus(ctx)
	}
	for _, s := range e.run.Stages {
		if s.failed && s.Status != runner.StatusSkipped {
			return runner.StatusFailure
		}
	}
	return runner.StatusSuccess
}

func cancelStatus(ctx context.Context) runner.Status {
	if errors.Is(context.Cause(ctx), ErrPipelineTimeout) {
		return runner.StatusTimeout
	}
	return runner.StatusCancelled
}

// values are the expression values of n: git facts, matrix, variables,
// secrets and the outputs of the steps that ran so far.
func (e *execution) values(n *plan.Node) map[string]any {
	g := e.opts.Git
	v := map[string]any{
		"branch": g.Branch, "ref": g.Ref, "sha": g.SHA, "event": g.Event,
		"run_id": e.run.ID,
		"runner": map[string]any{"os": runtime.GOOS, "arch": runtime.GOARCH, "name": "local"},
	}
	if n.Matrix != nil {
		v["matrix"] = n.Matrix
	}
	vars := map[string]any{}
	for _, kv := range e.variables(n) {
		vars[kv.Name] = kv.Value
		v[kv.Name] = kv.Value
	}
	v["variables"] = vars
	e.mu.Lock()
	v["steps"] = maps.Clone(e.outputs)
	e.mu.Unlock()
	return v
}

// variables are the pipeline's, then the stage's, then --var overrides.
func (e *execution) variables(n *plan.Node) pipeline.Vars {
	vars := append(append(pipeline.Vars{}, e.run.Pipeline.Variables...), n.Stage.Variables...)
	for _, k := range slices.Sorted(maps.Keys(e.opts.Variables)) {
		vars = append(vars, pipeline.Var{Name: k, Value: e.opts.Variables[k]})
	}
	return vars
}
