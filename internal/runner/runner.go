// Package runner runs one job — the steps of one stage instance — in an
// Environment: it evaluates conditions, interpolates ${{ }} expressions,
// injects variables and secrets, masks secrets in output, collects step
// outputs, and applies retry, continue_on_error and timeouts.
package runner

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/oxide-ci/oxide/internal/spec"
)

// Environment is where a job's steps execute. Call order: Prepare once, then
// Exec once per step attempt (concurrently when the stage sets parallel:
// true), then Cleanup once, also when Prepare failed. The caller of Run
// makes the Prepare and Cleanup calls (Cleanup with a context that is not
// cancelled with the job's); Run makes the Exec calls.
//
// Exec must stop the whole process tree when ctx is done: SIGTERM, a grace
// period, SIGKILL. It returns the step's exit code (128+signal when a
// signal killed it), and an error only when the step could not be started
// (an infrastructure failure) or when ctx ended it, in which case the error
// is context.Cause(ctx). Exec returns once the step's process has exited,
// without waiting for what it started in the background (Cleanup stops
// that), and must not close cmd.Stdout or cmd.Stderr.
type Environment interface {
	Prepare(ctx context.Context) error
	Exec(ctx context.Context, cmd Command) (exitCode int, err error)
	Cleanup(ctx context.Context) error
}

// ScratchDirer is an optional capability of an Environment: a directory,
// valid from Prepare to Cleanup, that the runner and the step processes
// both reach by the same path. The runner keeps the steps' $OXIDE_OUTPUT
// files there; for an Environment without it, the runner makes a temporary
// directory of its own.
type ScratchDirer interface {
	ScratchDir() string
}

// Contained is an optional capability of an Environment whose steps run
// apart from the runner's machine (a container: its image has its own
// PATH and HOME). Their processes inherit none of the runner's own
// variables, only the job's.
type Contained interface {
	Contained() bool
}

// Command is one step attempt to execute.
type Command struct {
	Script string   // the step's run, expressions already interpolated
	Shell  string   // bash (default), sh, python
	Dir    string   // absolute working directory
	Env    []string // KEY=VALUE, complete: the process sees nothing else
	// Stdout and Stderr receive the step's output. The runner passes the
	// write ends of pipes (*os.File), which an Environment can hand to the
	// process directly.
	Stdout io.Writer
	Stderr io.Writer
}

// Status is the outcome of a step or a job.
type Status = spec.Status

// Statuses.
const (
	StatusPending   = spec.StatusPending
	StatusRunning   = spec.StatusRunning
	StatusSuccess   = spec.StatusSuccess
	StatusFailure   = spec.StatusFailure
	StatusSkipped   = spec.StatusSkipped
	StatusCancelled = spec.StatusCancelled
	StatusTimeout   = spec.StatusTimeout
)

// StepInfo identifies a step in progress for a Sink.
type StepInfo struct {
	Job     *spec.Job
	Index   int // position in Job.Steps
	Step    *spec.Step
	Attempt int // 1-based
}

// StepResult is the outcome of one step.
//
// A step whose command ran and exited non-zero is StatusFailure with its
// ExitCode and a nil Err. StatusFailure with a non-nil Err means the step
// could not run as written: the environment could not start it (an
// infrastructure failure), an expression failed, or it is a plugin step.
// For StatusTimeout and StatusCancelled, Err is the cause (ErrStepTimeout,
// ErrJobTimeout, or the cause of the caller's cancellation); for
// StatusSkipped it says why (it wraps ErrConditionFalse, or is the cause of
// the cancellation that came before the step could start).
type StepResult struct {
	Status   Status
	ExitCode int
	Duration time.Duration // of the last attempt's process
	Attempts int           // attempts made: 0 when the step did not run
	Outputs  map[string]string
	Err      error
	// ContinueOnError is set on a failed or timed-out step whose
	// continue_on_error was true: the job's status ignores the step.
	ContinueOnError bool
}

// JobResult is the outcome of a job.
type JobResult struct {
	// Status is success unless a step failed without continue_on_error
	// (failure), timed out (timeout), or the job was cancelled; skipped
	// when the job's own condition said so, with Reason.
	Status Status
	Reason string
	Steps  []StepResult // one per Job.Steps, same order
	// Outputs are the steps' outputs: step id → key → value.
	Outputs map[string]map[string]string
	// Err is an infrastructure error of the runner itself (it could not
	// make its temporary directory): then Status is failure and no step
	// ran.
	Err error
}

// Why says why a job ended as it did, for its stage: its Reason (it was
// skipped), its Err (it could not run), else the error of its first step
// that failed or timed out with one; "" when its steps' statuses say all.
func (r JobResult) Why() string {
	switch {
	case r.Reason != "":
		return r.Reason
	case r.Err != nil:
		return r.Err.Error()
	}
	for _, s := range r.Steps {
		if (s.Status == StatusFailure || s.Status == StatusTimeout) && s.Err != nil {
			return s.Err.Error()
		}
	}
	return ""
}

// ErrStepTimeout is the cause of a step's context when the step's timeout
// expires; a step ended by it has StatusTimeout.
var ErrStepTimeout = errors.New("step timed out")

// ErrJobTimeout is the cause of the job's context when Job.Timeout
// expires: the running step gets StatusTimeout, the job StatusTimeout.
var ErrJobTimeout = errors.New("job timed out")

// ErrConditionFalse is wrapped by StepResult.Err of a step skipped because
// its condition (if, unless, or the implicit success()) said so.
var ErrConditionFalse = spec.ErrConditionFalse

// ErrPluginUnavailable is wrapped by StepResult.Err of a plugin step: this
// runner does not execute plugins yet.
var ErrPluginUnavailable = errors.New("plugin steps are not available yet")

// Stream names an output stream of a step.
type Stream string

// Streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Sink receives a job's progress.
//
// Order of calls for one step: StepStarted once per attempt (Attempt 1,
// 2, …), then that attempt's StepLines, then, after the last attempt,
// StepCompleted once. A step that does not run (skipped by its condition,
// or not reached because the job was cancelled) gets StepCompleted only.
// Every StepLines of an attempt returns before the next StepStarted or the
// StepCompleted of that step.
//
// Concurrency: the stdout and stderr lines of one step are delivered by
// two goroutines, so StepLines may be called concurrently for the same
// step (with different streams); with parallel: true, calls for different
// steps are concurrent too. Implementations must be safe for concurrent
// use. A slow Sink slows the step down: its output pipe fills and the
// process blocks on write.
//
// StepLines gets the complete lines of one read from the step's output, so
// that a step printing many lines costs a call per batch, not per line.
// Lines are already masked and carry no line terminator; a line longer than
// 64 KiB arrives split into several. The slices (lines and each line) are
// only valid during the call: a Sink must copy what it keeps.
type Sink interface {
	StepStarted(s StepInfo)
	StepLines(s StepInfo, stream Stream, lines [][]byte)
	StepCompleted(s StepInfo, r StepResult)
}
