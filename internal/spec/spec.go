// Package spec is the typed job that the control plane compiles from a
// pipeline and a worker runs: the wire format shared by oxide run, the
// server and its agents, versioned, with explicit JSON names. It depends on
// nothing of the pipeline parser, the store or the scheduler, so that an
// agent links none of them.
package spec

import "time"

// Version is the schema version of Job, and of the compiled runs that hold
// jobs. A change that old readers would misread increments it.
const Version = 1

// Status is the outcome of a step, a job or a stage. The values are the
// reference schema's (common.yaml Status and StepStatus).
type Status string

// Statuses.
const (
	StatusPending   Status = "pending"
	StatusWaiting   Status = "waiting"
	StatusRunning   Status = "running"
	StatusSuccess   Status = "success"
	StatusFailure   Status = "failure"
	StatusSkipped   Status = "skipped"
	StatusCancelled Status = "cancelled"
	StatusTimeout   Status = "timeout"
)

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool {
	return s == StatusPending || s == StatusRunning || s == StatusWaiting || s.Done()
}

// Done reports whether s is final.
func (s Status) Done() bool {
	switch s {
	case StatusSuccess, StatusFailure, StatusSkipped, StatusCancelled, StatusTimeout:
		return true
	}
	return false
}

// Job is one stage instance, self-contained: what a worker needs to run its
// steps and what their expressions see.
type Job struct {
	Version int    `json:"version"`
	RunID   string `json:"run_id,omitempty"`
	JobID   string `json:"job_id,omitempty"`
	// Attempt counts the runs of the stage instance, 1-based: 2 and more
	// are its stage retries. For a job submitted directly it counts its
	// claims.
	Attempt  int           `json:"attempt,omitempty"`
	Pipeline string        `json:"pipeline,omitempty"`
	Stage    string        `json:"stage"` // instance name, e.g. "test (linux, 1.75)"
	Steps    []*Step       `json:"steps"`
	Parallel bool          `json:"parallel,omitempty"` // run steps concurrently
	Timeout  time.Duration `json:"timeout,omitempty"`  // 0: none
	// Condition is the stage's own condition when only the worker can
	// decide it (it reads hashFiles() or runner.*): the runner evaluates it
	// before the first step and skips the job when it is false.
	Condition   *Condition     `json:"condition,omitempty"`
	Variables   Vars           `json:"variables,omitempty"` // pipeline, stage, then trigger overrides; values may hold ${{ }}
	Secrets     []Secret       `json:"secrets,omitempty"`   // resolved values
	Environment *Environment   `json:"environment,omitempty"`
	Git         Git            `json:"git"`
	Matrix      map[string]any `json:"matrix,omitempty"`
	// Outputs are those of the steps of earlier stages: step id → key →
	// value.
	Outputs map[string]map[string]string `json:"outputs,omitempty"`
	// DepsFailed is set when a dependency failed: success() is false and
	// failure() true for the job's steps.
	DepsFailed bool `json:"deps_failed,omitempty"`

	// Set by the worker that runs the job, never sent.
	Workspace string `json:"-"` // absolute directory the steps run in
	Runner    Runner `json:"-"`
}

// Git is the revision a run builds and the event that started it.
type Git struct {
	Branch string `json:"branch,omitempty"`
	Ref    string `json:"ref,omitempty"`
	SHA    string `json:"sha,omitempty"`
	Event  string `json:"event,omitempty"`
}

// Runner describes the worker a job runs on: runner.* in expressions.
type Runner struct {
	Name, OS, Arch string
}

// Step is one command or plugin call.
type Step struct {
	Name       string         `json:"name"`
	ID         string         `json:"id,omitempty"` // steps.<id>.outputs; empty: Name
	Plugin     string         `json:"plugin,omitempty"`
	With       map[string]any `json:"with,omitempty"`
	Run        string         `json:"run,omitempty"`
	Shell      string         `json:"shell,omitempty"` // bash (default), sh, python
	WorkingDir string         `json:"working_directory,omitempty"`
	Variables  Vars           `json:"variables,omitempty"`
	Condition  *Condition     `json:"condition,omitempty"`
	Timeout    time.Duration  `json:"timeout,omitempty"`
	Retry      *Retry         `json:"retry,omitempty"`
	// ContinueOnError is "true", "false" or a ${{ }} expression that
	// evaluates to one of them.
	ContinueOnError string `json:"continue_on_error,omitempty"`
}

// Key is the step's name in the steps context: its id, else its name.
func (s *Step) Key() string {
	if s.ID != "" {
		return s.ID
	}
	return s.Name
}

// Condition decides whether a stage or step runs: If (empty: success())
// and Unless, which must be false.
type Condition struct {
	If     string `json:"if,omitempty"`
	Unless string `json:"unless,omitempty"`
}

// Retry says how a failed step or stage is tried again.
type Retry struct {
	MaxAttempts        int           `json:"max_attempts"`
	Delay              time.Duration `json:"delay,omitempty"`
	ExponentialBackoff bool          `json:"exponential_backoff,omitempty"`
	RetryOn            []string      `json:"retry_on,omitempty"` // failure, timeout, cancelled; empty: failure
}

// Vars are variables in order: later ones see earlier ones.
type Vars []Var

// Var is one variable. Value may hold ${{ }} expressions.
type Var struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Secret is a resolved secret value, injected as an environment variable.
type Secret struct {
	Name   string `json:"name,omitempty"` // variable name; empty: masked, not injected
	Value  string `json:"value"`
	Masked bool   `json:"masked,omitempty"`
	// Step is the id of the one step that receives the variable; empty
	// means every step. Every masked secret is masked in all output.
	Step string `json:"step,omitempty"`
}

// SecretRef names a secret to resolve: by the control plane (provider
// oxide) or by the worker (provider environment).
type SecretRef struct {
	Name     string `json:"name"`
	Provider string `json:"provider"`
	Path     string `json:"path,omitempty"`
	Key      string `json:"key,omitempty"`
	Masked   bool   `json:"masked,omitempty"`
	Required bool   `json:"required,omitempty"`
	Step     string `json:"step,omitempty"` // the step that gets it; empty: every step
}

// Lookup is the name a provider knows the secret by: its path, else its
// name.
func (r SecretRef) Lookup() string {
	if r.Path != "" {
		return r.Path
	}
	return r.Name
}
