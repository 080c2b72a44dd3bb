// Package store is the control plane's persistence: small interfaces, one per
// concern, implemented for SQLite (package sqlite, the embedded default) and
// PostgreSQL (package postgres, for many servers sharing one database), and
// checked by one conformance suite (package storetest) that both must pass.
//
// # Transactions and the outbox
//
// A Store hands out one interface per table group (Pipelines, Runs, Jobs, ...).
// Every method is atomic. Called through the Store, a method runs in a
// transaction of its own. Called through the Tx that InTx passes to its
// function, it joins that transaction, so that several calls commit or roll
// back together; a method that fails inside InTx leaves nothing behind (it runs
// in a savepoint), so the caller may handle the error and go on.
//
// Every method that changes state appends its Event to the outbox in the same
// transaction. The store writes the event itself, so no caller can forget it,
// and an event exists if and only if its change was committed. An event's Type
// is "<aggregate>.<what happened>": "job.<new state>", "run.<new status>",
// "pipeline.created", ... (see each method), and its Payload is the row after
// the change (before it, for deletions), encoded with the row type's JSON tags.
// The relay reads Outbox.Pending, publishes each event with its ID as the
// message ID (so that duplicates are dropped), and calls MarkPublished.
// Pending lists the events about one aggregate in the order of its changes
// (row locks serialize those). Callers add events of their own with
// Outbox.Append, inside InTx to commit them with other changes.
//
// Not state changes, hence no events: log lines (Logs.Append; the server
// streams them live itself), heartbeats and lease renewals, cache hits, audit
// entries.
//
// # The job queue
//
// The queue is the jobs table itself, its queued rows in an index by priority
// and age, so a state change is one row update. Jobs are claimed, not
// dequeued: Claim moves queued jobs to assigned, with a worker, a lease and
// the next attempt number, highest priority first, then oldest. On PostgreSQL the claim is one UPDATE over a SELECT … FOR UPDATE SKIP
// LOCKED, so any number of servers claim concurrently and no job is handed out
// twice; on SQLite every write transaction goes through one connection, so
// claims are serialized. A Lease (job, worker, attempt) fences the later calls:
// Start, Complete and Fail succeed only for the job's current lease, so a
// worker whose lease expired, and whose job went back to the queue, cannot
// touch the newer attempt. Workers keep their leases with Extend; expired
// leases are requeued by RequeueExpired, until MaxAttempts is spent. So a job
// runs twice only if its worker runs on after losing its lease, which Extend
// tells it.
//
// # IDs and time
//
// IDs are random UUID strings (NewID) unless the caller sets them. Times are
// UTC with microsecond precision. On PostgreSQL the database's clock stamps
// rows and leases, so that servers whose clocks differ agree; on SQLite the
// process's clock does.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/spec"
)

// Errors that callers test with errors.Is. Drivers wrap them with detail.
var (
	// ErrNotFound reports that no row has the given ID or key, or that a
	// row refers to one that does not exist (a run of an unknown pipeline).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict reports a change that contradicts stored state: a name or
	// key already taken, a change to something already finished, or a lease
	// that is no longer the job's current one.
	ErrConflict = errors.New("store: conflict")
	// ErrInvalid reports an argument the store cannot accept: an unknown
	// state, a malformed JSON document, a missing required field.
	ErrInvalid = errors.New("store: invalid argument")
)

// A DriverError is an error of the database mapped to one of the store's
// sentinels. Its message is the sentinel's alone, so that the database's
// own words (its table, column and key names) reach logs, through Err, and
// never a client.
type DriverError struct {
	Sentinel error // ErrNotFound, ErrConflict or ErrInvalid
	Err      error // the driver's
}

func (e *DriverError) Error() string   { return e.Sentinel.Error() }
func (e *DriverError) Unwrap() []error { return []error{e.Sentinel, e.Err} }

// Store is a database. Its methods are safe for concurrent use.
type Store interface {
	Tx
	// InTx runs fn in one transaction, committed if fn returns nil and
	// rolled back otherwise. fn must use only tx (not the Store) and only
	// from one goroutine. InTx does not retry; on SQLite it holds the
	// database's single writer while fn runs, so keep fn short.
	InTx(ctx context.Context, fn func(tx Tx) error) error
	// Close releases the database's connections.
	Close() error
}

// Tx is the set of tables, seen either through a Store (every call commits on
// its own) or inside InTx (calls share one transaction).
type Tx interface {
	Pipelines() Pipelines
	Runs() Runs
	Stages() Stages
	Jobs() Jobs
	Steps() Steps
	Logs() Logs
	Agents() Agents
	Secrets() Secrets
	Cache() Cache
	Audit() Audit
	Templates() Templates
	Tokens() Tokens
	BootstrapTokens() BootstrapTokens
	Workers() Workers
	Leases() Leases
	Approvals() Approvals
	Outbox() Outbox
}

// Pipeline is a stored pipeline definition.
type Pipeline struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`                 // unique
	Repository string    `json:"repository,omitempty"` // where the definition lives, if anywhere
	Definition string    `json:"definition"`           // the YAML as written
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Pipelines stores pipeline definitions. Events: pipeline.created,
// pipeline.updated, pipeline.deleted.
type Pipelines interface {
	// Create stores p; ErrConflict if its name is taken.
	Create(ctx context.Context, p Pipeline) (Pipeline, error)
	Get(ctx context.Context, id string) (Pipeline, error)
	GetByName(ctx context.Context, name string) (Pipeline, error)
	// List returns all pipelines by name.
	List(ctx context.Context) ([]Pipeline, error)
	// Update replaces the name, repository and definition of pipeline p.ID.
	Update(ctx context.Context, p Pipeline) (Pipeline, error)
	// Delete deletes a pipeline with its runs and everything under them.
	Delete(ctx context.Context, id string) error
}

// RunStatus is the status of a run.
type RunStatus string

// Run statuses. A run starts queued; waiting means waiting for an approval.
const (
	RunQueued    RunStatus = "queued"
	RunRunning   RunStatus = "running"
	RunWaiting   RunStatus = "waiting"
	RunSuccess   RunStatus = "success"
	RunFailure   RunStatus = "failure"
	RunCancelled RunStatus = "cancelled"
	RunTimeout   RunStatus = "timeout"
)

// Valid reports whether s is one of the run statuses.
func (s RunStatus) Valid() bool {
	switch s {
	case RunQueued, RunRunning, RunWaiting, RunSuccess, RunFailure, RunCancelled, RunTimeout:
		return true
	}
	return false
}

// Done reports whether s is final.
func (s RunStatus) Done() bool {
	switch s {
	case RunSuccess, RunFailure, RunCancelled, RunTimeout:
		return true
	}
	return false
}

// Run is one execution of a pipeline.
type Run struct {
	ID         string          `json:"id"`
	PipelineID string          `json:"pipeline_id"`
	Number     int             `json:"run_number"` // 1, 2, … per pipeline
	Status     RunStatus       `json:"status"`
	Trigger    json.RawMessage `json:"trigger,omitempty"` // what started it; opaque to the store
	GitRef     string          `json:"git_ref,omitempty"`
	GitSHA     string          `json:"git_sha,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// RunFilter selects runs; zero fields match everything.
type RunFilter struct {
	PipelineID string
	Status     RunStatus
	Limit      int // 0: no limit
	Offset     int
}

// Runs stores runs. Events: run.<status> on every change of status, including
// creation (run.queued).
type Runs interface {
	// Create stores r with the next run number of its pipeline: 1, 2, …
	// without gaps or duplicates, however many servers create runs at once.
	// Status defaults to queued. ErrNotFound if the pipeline does not exist.
	Create(ctx context.Context, r Run) (Run, error)
	Get(ctx context.Context, id string) (Run, error)
	GetByNumber(ctx context.Context, pipelineID string, number int) (Run, error)
	// List returns runs newest first.
	List(ctx context.Context, f RunFilter) ([]Run, error)
	// Lock reads a run and, inside InTx, holds it until the transaction
	// ends: a transaction that changes a run's stages and jobs takes the
	// lock first, so that two servers never advance one run at once (each
	// sees what the other committed). On SQLite, where write transactions
	// run one at a time, it is a read.
	Lock(ctx context.Context, id string) (Run, error)
	// SetStatus changes a run's status, stamping StartedAt when it first
	// runs and FinishedAt when it is done. A done run's status is final:
	// ErrConflict.
	SetStatus(ctx context.Context, id string, status RunStatus) (Run, error)
}

// Status is the status of a stage instance or a step: the wire format's,
// with one status algebra for the store, the run state machine and workers.
type Status = spec.Status

// Stage and step statuses.
const (
	StatusPending   = spec.StatusPending
	StatusRunning   = spec.StatusRunning
	StatusWaiting   = spec.StatusWaiting
	StatusSuccess   = spec.StatusSuccess
	StatusFailure   = spec.StatusFailure
	StatusSkipped   = spec.StatusSkipped
	StatusCancelled = spec.StatusCancelled
	StatusTimeout   = spec.StatusTimeout
)

// Stage is a stage instance: one node of a run's DAG (a matrix stage has one
// per combination), executed as one job.
type Stage struct {
	ID         string          `json:"id"`
	RunID      string          `json:"run_id"`
	Index      int             `json:"index"` // position in the run, unique per run
	Name       string          `json:"name"`
	Matrix     json.RawMessage `json:"matrix,omitempty"` // this instance's combination
	Status     Status          `json:"status"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// Stages stores stage instances. Events: stage.<status> on every change,
// including creation.
type Stages interface {
	// Create stores stages (status pending unless set). ErrNotFound if a
	// run does not exist; ErrConflict if an index is taken.
	Create(ctx context.Context, stages ...Stage) ([]Stage, error)
	Get(ctx context.Context, id string) (Stage, error)
	// List returns a run's stages by index.
	List(ctx context.Context, runID string) ([]Stage, error)
	// SetStatus is like Runs.SetStatus.
	SetStatus(ctx context.Context, id string, status Status) (Stage, error)
}

// JobState is the state of a job.
type JobState string

// Job states. pending: waiting for its dependencies; queued: claimable;
// assigned: claimed by a worker; running: started by it; the rest are final.
const (
	JobPending   JobState = "pending"
	JobQueued    JobState = "queued"
	JobAssigned  JobState = "assigned"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
	JobTimeout   JobState = "timeout"
)

// Valid reports whether s is one of the job states.
func (s JobState) Valid() bool {
	switch s {
	case JobPending, JobQueued, JobAssigned, JobRunning:
		return true
	}
	return s.Done()
}

// Done reports whether s is final.
func (s JobState) Done() bool {
	switch s {
	case JobSucceeded, JobFailed, JobCancelled, JobTimeout:
		return true
	}
	return false
}

// DefaultMaxAttempts is a job's MaxAttempts when Enqueue gets 0.
const DefaultMaxAttempts = 3

// Job is the unit that one agent executes: a stage instance of a run, or a
// job submitted directly.
type Job struct {
	ID          string          `json:"id"`
	RunID       string          `json:"run_id,omitempty"`   // empty for a job submitted directly
	StageID     string          `json:"stage_id,omitempty"` // the stage instance it executes
	Name        string          `json:"name"`
	Spec        json.RawMessage `json:"spec,omitempty"`   // what to run; opaque to the store
	Labels      []string        `json:"labels,omitempty"` // a worker needs all of them to claim the job
	Priority    int             `json:"priority"`         // higher first
	State       JobState        `json:"state"`
	Attempt     int             `json:"attempt"` // claims so far: the current one's number while assigned or running
	MaxAttempts int             `json:"max_attempts"`
	WorkerID    string          `json:"worker_id,omitempty"` // the holder while assigned or running; who ran it, once done
	LeaseUntil  *time.Time      `json:"lease_until,omitempty"`
	ExitCode    *int            `json:"exit_code,omitempty"`
	Error       string          `json:"error,omitempty"` // why the last attempt failed, or why it was cancelled
	CreatedAt   time.Time       `json:"created_at"`
	QueuedAt    *time.Time      `json:"queued_at,omitempty"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
}

// Lease returns the job's current lease.
func (j Job) Lease() Lease { return Lease{JobID: j.ID, WorkerID: j.WorkerID, Attempt: j.Attempt} }

// Lease names one claim of a job: only the current lease may start,
// complete or fail it. It is the wire format's.
type Lease = spec.Lease

// Result is how an attempt ended, reported by the worker holding its lease.
type Result struct {
	Lease
	State    JobState // succeeded, failed, timeout or cancelled
	ExitCode *int
	Error    string
}

// JobFilter selects jobs; zero fields match everything.
type JobFilter struct {
	RunID    string
	State    JobState
	WorkerID string
	Limit    int // 0: no limit
	Offset   int
}

// QueueTime is when a new job j, stored at now, joins the queue: nil for a
// pending job, its QueuedAt when that is later, else now.
func QueueTime(j *Job, now time.Time) *time.Time {
	switch {
	case j.State != JobQueued:
		return nil
	case j.QueuedAt != nil && j.QueuedAt.After(now):
		at := *j.QueuedAt
		return &at
	}
	return &now
}

// Jobs stores jobs and is the job queue. Events: job.<state> on every change
// of state, including creation (job.queued or job.pending).
type Jobs interface {
	// Enqueue stores jobs as one batch and returns them as stored. State
	// must be queued (the default) or pending: a pending job is not claimed
	// until Queue. A queued job with a QueuedAt in the future is not
	// claimed before then (a stage retry's delay). MaxAttempts defaults to
	// DefaultMaxAttempts.
	Enqueue(ctx context.Context, jobs ...Job) ([]Job, error)
	Get(ctx context.Context, id string) (Job, error)
	// List returns jobs oldest first.
	List(ctx context.Context, f JobFilter) ([]Job, error)
	// Count returns the number of jobs in a state.
	Count(ctx context.Context, state JobState) (int, error)
	// Queue makes pending jobs claimable and returns them; jobs that are
	// not pending are left alone and not returned.
	Queue(ctx context.Context, ids ...string) ([]Job, error)
	// Claim assigns to workerID up to limit queued jobs whose labels are
	// all among labels, highest priority first, then longest queued, and
	// returns them in that order: each with the next attempt number and a
	// lease of the given duration. Concurrent claims never return the same
	// job.
	Claim(ctx context.Context, workerID string, labels []string, limit int, lease time.Duration) ([]Job, error)
	// Claimable returns up to limit of the queued jobs that Claim could
	// take now, whatever their labels, in Claim's order after the first
	// offset, without claiming them: what the server places on its agents.
	Claimable(ctx context.Context, limit, offset int) ([]Job, error)
	// Take claims queued job id for workerID as Claim does, whatever its
	// labels. ErrConflict if the job is not queued or not yet due (a
	// concurrent Take or Claim got it first).
	Take(ctx context.Context, id, workerID string, lease time.Duration) (Job, error)
	// Start marks an assigned job running. ErrConflict if l is not the
	// job's current lease of an assigned job.
	Start(ctx context.Context, l Lease) (Job, error)
	// Extend renews, to the given duration from now, the leases of all jobs
	// that workerID holds (a worker's heartbeat), and returns their IDs: a
	// job of the worker that is missing was taken from it.
	Extend(ctx context.Context, workerID string, lease time.Duration) ([]string, error)
	// Complete records the outcome of attempts, as one batch, and returns
	// the jobs it completed. A result whose lease is no longer current (its
	// job was requeued, cancelled or completed already) changes nothing and
	// its job is not returned.
	Complete(ctx context.Context, results ...Result) ([]Job, error)
	// Fail ends an attempt that failed for a reason outside the job (the
	// worker lost its workspace, or shut down): the job is queued again if
	// attempts remain, else it fails with reason. ErrConflict if l is not
	// current.
	Fail(ctx context.Context, l Lease, reason string) (Job, error)
	// RequeueExpired does what Fail does to every assigned or running job
	// whose lease has expired, and returns those jobs.
	RequeueExpired(ctx context.Context) ([]Job, error)
	// Cancel cancels a job that is not done (ErrConflict if it is). The
	// job keeps its WorkerID, so that the server can stop the worker.
	Cancel(ctx context.Context, id, reason string) (Job, error)
}

// Step is one step of a job.
type Step struct {
	ID         string            `json:"id"`
	JobID      string            `json:"job_id"`
	Index      int               `json:"index"` // position in the job, unique per job
	Name       string            `json:"name"`
	Key        string            `json:"key,omitempty"` // the step's id in the pipeline: steps.<key>.outputs
	Status     Status            `json:"status"`
	ExitCode   *int              `json:"exit_code,omitempty"`
	Outputs    map[string]string `json:"outputs,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	StartedAt  *time.Time        `json:"started_at,omitempty"`
	FinishedAt *time.Time        `json:"finished_at,omitempty"`
}

// StepUpdate changes a step: its status always, its exit code and outputs
// when set.
type StepUpdate struct {
	Status   Status
	ExitCode *int
	Outputs  map[string]string
}

// Steps stores the steps of jobs. Events: step.<status> on every change,
// including creation.
type Steps interface {
	// Create stores steps (status pending unless set). ErrNotFound if a job
	// does not exist; ErrConflict if an index is taken.
	Create(ctx context.Context, steps ...Step) ([]Step, error)
	Get(ctx context.Context, id string) (Step, error)
	// List returns a job's steps by index.
	List(ctx context.Context, jobID string) ([]Step, error)
	// Update applies u, stamping times as Runs.SetStatus does. A done
	// step's status is final: ErrConflict.
	Update(ctx context.Context, id string, u StepUpdate) (Step, error)
}

// LogLine is one line of a job's output: the wire format's.
type LogLine = spec.LogLine

// Logs stores job output. No events: the server streams lines itself.
type Logs interface {
	// Append stores lines of a job and returns how many it stored: lines
	// whose Seq is stored already are dropped, so an agent that reconnects
	// may resend what was not acknowledged. ErrNotFound if the job does not
	// exist.
	Append(ctx context.Context, jobID string, lines []LogLine) (int, error)
	// Read returns up to limit (0: all) lines of a job with Seq > after, by
	// Seq.
	Read(ctx context.Context, jobID string, after int64, limit int) ([]LogLine, error)
}

// AgentStatus is the status of an agent.
type AgentStatus string

// Agent statuses. lost: it stopped sending heartbeats.
const (
	AgentOnline   AgentStatus = "online"
	AgentBusy     AgentStatus = "busy"
	AgentDraining AgentStatus = "draining"
	AgentOffline  AgentStatus = "offline"
	AgentLost     AgentStatus = "lost"
)

// Valid reports whether s is one of the agent statuses.
func (s AgentStatus) Valid() bool {
	switch s {
	case AgentOnline, AgentBusy, AgentDraining, AgentOffline, AgentLost:
		return true
	}
	return false
}

// Agent is a registered worker.
type Agent struct {
	ID       string      `json:"id"`
	Name     string      `json:"name"`
	Labels   []string    `json:"labels,omitempty"`
	Status   AgentStatus `json:"status"`
	Version  string      `json:"version,omitempty"`
	OS       string      `json:"os,omitempty"`
	Arch     string      `json:"arch,omitempty"`
	Capacity int         `json:"capacity"` // jobs it runs at once
	// The machine it reported, which jobs' resources are placed against
	// (0: unknown).
	CPUMillis       int64      `json:"cpu_millis,omitempty"` // CPUs, in thousandths
	MemoryBytes     int64      `json:"memory_bytes,omitempty"`
	GPUs            int        `json:"gpus,omitempty"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at,omitempty"`
	RegisteredAt    time.Time  `json:"registered_at"`
}

// Agents stores workers. Events: agent.registered, agent.<status> on a
// change of status, agent.deleted.
type Agents interface {
	// Register stores an agent, online, or updates the one with the same
	// ID (an agent registering again after a restart keeps its identity
	// and RegisteredAt). Capacity defaults to 1.
	Register(ctx context.Context, a Agent) (Agent, error)
	Get(ctx context.Context, id string) (Agent, error)
	// List returns all agents by name.
	List(ctx context.Context) ([]Agent, error)
	// Heartbeat stamps LastHeartbeatAt with the current time. No event.
	Heartbeat(ctx context.Context, id string) error
	SetStatus(ctx context.Context, id string, status AgentStatus) (Agent, error)
	// Silent returns, by name, the agents not heard from for silence
	// (their last heartbeat, Register counting as one, is older) that are
	// online, busy or draining, or offline holding a job (assigned or
	// running): those that MarkLost would mark lost.
	Silent(ctx context.Context, silence time.Duration) ([]Agent, error)
	// MarkLost marks agent id lost if Silent would return it, and returns
	// it; ErrConflict if it would not (it was heard from since, or is lost
	// already). Its jobs are not touched: the caller fails their leases,
	// in the same transaction.
	MarkLost(ctx context.Context, id string, silence time.Duration) (Agent, error)
	Delete(ctx context.Context, id string) error
}

// SecretScope is what a secret belongs to.
type SecretScope string

// Secret scopes.
const (
	ScopeOrganization SecretScope = "organization"
	ScopeProject      SecretScope = "project"
	ScopePipeline     SecretScope = "pipeline"
)

// SecretKey names a secret.
type SecretKey struct {
	Scope   SecretScope `json:"scope"`
	ScopeID string      `json:"scope_id,omitempty"` // the project or pipeline; empty for the organization
	Name    string      `json:"name"`
}

// Secret is an encrypted secret. The store never sees plaintext: encryption
// happens above it.
type Secret struct {
	SecretKey
	Ciphertext []byte    `json:"-"` // never in events
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Secrets stores encrypted secrets. Events: secret.saved, secret.deleted,
// without the ciphertext.
type Secrets interface {
	// Put creates or replaces the secret at s.SecretKey.
	Put(ctx context.Context, s Secret) (Secret, error)
	Get(ctx context.Context, k SecretKey) (Secret, error)
	// List returns the secrets of one scope by name, without ciphertext.
	List(ctx context.Context, scope SecretScope, scopeID string) ([]Secret, error)
	Delete(ctx context.Context, k SecretKey) error
}

// CacheEntry records a cache archive held in the object store.
type CacheEntry struct {
	Scope      string     `json:"scope"` // who may restore it, e.g. a pipeline ID
	Key        string     `json:"key"`
	Size       int64      `json:"size_bytes"`
	Path       string     `json:"path"` // the object's key in the object store
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt time.Time  `json:"last_used_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// Cache stores cache entries. Events: cache.saved, cache.deleted.
type Cache interface {
	// Put creates or replaces the entry at (e.Scope, e.Key).
	Put(ctx context.Context, e CacheEntry) (CacheEntry, error)
	// Find returns, for the first of keys that matches, the entry with that
	// exact key or else the newest entry whose key starts with it (the way
	// restore-keys work), ignoring expired entries, and stamps its
	// LastUsedAt. ErrNotFound when no key matches.
	Find(ctx context.Context, scope string, keys ...string) (CacheEntry, error)
	// List returns all entries, least recently used first: eviction order.
	List(ctx context.Context) ([]CacheEntry, error)
	Delete(ctx context.Context, scope, key string) error
	// DeleteExpired deletes the expired entries and returns them, so that
	// the caller deletes their objects.
	DeleteExpired(ctx context.Context) ([]CacheEntry, error)
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID           int64           `json:"id"` // increasing
	Time         time.Time       `json:"time"`
	Actor        string          `json:"actor"`  // a user, token or agent
	Action       string          `json:"action"` // e.g. "secret.put"
	ResourceType string          `json:"resource_type,omitempty"`
	ResourceID   string          `json:"resource_id,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	Actor        string
	ResourceType string
	ResourceID   string
	Before       int64 // only entries with a smaller ID: the next page
	Limit        int   // 0: no limit
}

// Audit is the audit log: entries are appended, never changed.
type Audit interface {
	// Record appends e; ID and Time are set by the store.
	Record(ctx context.Context, e AuditEntry) (AuditEntry, error)
	// List returns entries newest first.
	List(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}

// Template is a job template: a job spec with typed parameters.
type Template struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"` // unique
	Description string          `json:"description,omitempty"`
	Version     int             `json:"version"` // 1, then +1 on every update
	Spec        json.RawMessage `json:"spec,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

// Templates stores job templates. Events: template.created,
// template.updated, template.deleted.
type Templates interface {
	// Create stores t; ErrConflict if its name is taken.
	Create(ctx context.Context, t Template) (Template, error)
	Get(ctx context.Context, id string) (Template, error)
	GetByName(ctx context.Context, name string) (Template, error)
	// List returns all templates by name.
	List(ctx context.Context) ([]Template, error)
	// Update replaces the name, description, spec and parameters of
	// template t.ID and increments its version.
	Update(ctx context.Context, t Template) (Template, error)
	Delete(ctx context.Context, id string) error
}

// APIToken is a bearer token of the API. The store keeps only its hash.
type APIToken struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"` // unique
	Role       string     `json:"role"` // viewer, developer or admin
	Hash       string     `json:"-"`    // SHA-256 hex of the token; unique; never in events
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Tokens stores API tokens. Events: token.created, token.deleted (without
// the hash).
type Tokens interface {
	// Create stores t with CreatedAt now and no LastUsedAt. ErrConflict if
	// its name or hash is taken; ErrInvalid on an unknown role or a missing
	// name or hash.
	Create(ctx context.Context, t APIToken) (APIToken, error)
	GetByHash(ctx context.Context, hash string) (APIToken, error)
	// List returns all tokens by name.
	List(ctx context.Context) ([]APIToken, error)
	Delete(ctx context.Context, id string) error
	// Touch sets LastUsedAt to at. No event.
	Touch(ctx context.Context, id string, at time.Time) error
}

// BootstrapToken is a one-time token with which an agent registers: it is
// spent on the first attempt, whatever the outcome, and expires unspent. The
// store keeps only its hash.
type BootstrapToken struct {
	ID        string     `json:"id"`
	Hash      string     `json:"-"`                    // SHA-256 hex of the token; unique; never in events
	Labels    []string   `json:"labels,omitempty"`     // given to the agent that registers with it
	CreatedBy string     `json:"created_by,omitempty"` // who made it: an API token's name, a provider
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"` // the ID of the agent it was spent for
}

// BootstrapTokens stores the bootstrap tokens of agents. Events:
// bootstrap_token.created, bootstrap_token.spent (without the hash).
type BootstrapTokens interface {
	// Create stores t with CreatedAt now and ExpiresAt ttl later (the
	// database's clock, as leases). ErrInvalid without a hash or with a ttl
	// that is not positive; ErrConflict if the hash is taken.
	Create(ctx context.Context, t BootstrapToken, ttl time.Duration) (BootstrapToken, error)
	// Spend marks the token with the hash used, by agentID, and returns it.
	// Of any number of concurrent calls (on any number of servers) one
	// wins. ErrNotFound if no token has the hash; ErrConflict, with the
	// token as stored, if it is spent already (UsedAt is set) or expired
	// (UsedAt is not), in which case it is left as it is.
	Spend(ctx context.Context, hash, agentID string) (BootstrapToken, error)
	Get(ctx context.Context, id string) (BootstrapToken, error)
	// List returns all tokens, newest first.
	List(ctx context.Context) ([]BootstrapToken, error)
}

// WorkerState is the state of a provisioned worker.
type WorkerState string

// Worker states, in order: provisioning (its token made, its machine being
// created, until its agent registers), ready (its agent registered),
// terminating (being destroyed), then terminated or failed (destroyed
// because it did not come up: the provider failed or the agent did not
// register in time). terminated and failed are final.
const (
	WorkerProvisioning WorkerState = "provisioning"
	WorkerReady        WorkerState = "ready"
	WorkerTerminating  WorkerState = "terminating"
	WorkerTerminated   WorkerState = "terminated"
	WorkerFailed       WorkerState = "failed"
)

// Done reports whether s is final.
func (s WorkerState) Done() bool { return s == WorkerTerminated || s == WorkerFailed }

// Worker is a worker that a provider made for the autoscaler: a container,
// a pod or a VM running an agent. Its row is the provisioning state
// machine, so that a restarted server finishes what it started.
type Worker struct {
	ID       string      `json:"id"`
	Provider string      `json:"provider"` // e.g. "docker"
	State    WorkerState `json:"state"`
	TokenID  string      `json:"token_id,omitempty"` // the bootstrap token it registers with
	AgentID  string      `json:"agent_id,omitempty"` // set when its agent registered
	Handle   string      `json:"handle,omitempty"`   // the provider's name for it: a container ID
	Error    string      `json:"error,omitempty"`    // why it failed or was terminated early
	// Isolation, for the server's own agent, is what keeps its jobs from
	// the server's files: "user oxide-runner (uid 998)", or "none: why".
	Isolation string `json:"isolation,omitempty"`
	// Deadline is when a provisioning worker whose agent has not
	// registered is given up.
	Deadline  time.Time `json:"deadline"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// WorkerUpdate changes a worker: the fields that are set.
type WorkerUpdate struct {
	State   WorkerState
	AgentID string
	Handle  string
	Error   string
}

// Workers stores provisioned workers. Events: worker.provisioning on
// Create, worker.<state> on a change of state, worker.updated on a change
// of other fields only.
type Workers interface {
	// Create stores w, provisioning unless its State is set; ID defaults
	// to a new one. ErrInvalid without a provider.
	Create(ctx context.Context, w Worker) (Worker, error)
	Get(ctx context.Context, id string) (Worker, error)
	// List returns the workers of a provider (all when empty) that are in
	// one of states (any when none), oldest first.
	List(ctx context.Context, provider string, states ...WorkerState) ([]Worker, error)
	// Update applies u and stamps UpdatedAt. ErrConflict if the worker is
	// in a final state already, or if u.State goes back (ready to
	// provisioning, terminating to ready or provisioning).
	Update(ctx context.Context, id string, u WorkerUpdate) (Worker, error)
}

// Leases are named, expiring locks that elect one server among those
// sharing a database for a task, such as the autoscaler of a pool of
// workers. Leases are not state changes: no events.
type Leases interface {
	// Acquire takes the lease name for holder until ttl from now (the
	// database's clock, as job leases), or renews it, and reports whether
	// holder has it: it does when the lease is free, expired, or holder's
	// already. Of concurrent calls for a free lease (on any number of
	// servers), one wins. ErrInvalid without a name or holder, or with a
	// ttl that is not positive.
	Acquire(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// Release frees the lease if holder has it; otherwise it does nothing.
	Release(ctx context.Context, name, holder string) error
}

// Event is an outbox entry: a state change to publish.
type Event struct {
	ID          string          `json:"id"`           // unique: the message ID for deduplication
	Type        string          `json:"type"`         // e.g. "job.assigned"
	Aggregate   string          `json:"aggregate"`    // the kind of thing that changed, e.g. "job"
	AggregateID string          `json:"aggregate_id"` // which one
	Payload     json.RawMessage `json:"payload"`
	CreatedAt   time.Time       `json:"created_at"` // set by the store
}

// NewEvent returns an event with a new ID and payload encoded as JSON.
func NewEvent(aggregate, aggregateID, typ string, payload any) (Event, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return Event{}, fmt.Errorf("%w: event %s: %w", ErrInvalid, typ, err)
	}
	return Event{ID: NewID(), Type: typ, Aggregate: aggregate, AggregateID: aggregateID, Payload: b}, nil
}

// Outbox holds events until the relay has published them.
type Outbox interface {
	// Append adds events of the caller's own (ID defaults to a new one).
	// Call it on a Tx to commit them with other changes.
	Append(ctx context.Context, events ...Event) error
	// Pending returns up to limit (0: all) unpublished events, oldest
	// first. Relays on several servers may publish an event twice; the
	// message ID makes the copy harmless.
	Pending(ctx context.Context, limit int) ([]Event, error)
	// MarkPublished marks events published; unknown IDs are ignored.
	MarkPublished(ctx context.Context, ids ...string) error
	// Prune deletes the events published before t and returns how many.
	Prune(ctx context.Context, before time.Time) (int, error)
}

// NewID returns a random (version 4) UUID.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
