package sdk

import (
	"encoding/json"
	"time"
)

// Pipeline is a stored pipeline definition.
type Pipeline struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Repository string    `json:"repository,omitempty"`
	Definition string    `json:"definition"` // the YAML as written
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Warnings, on create and update, name what the definition asks for
	// that Oxide does not do yet, as FILE:LINE:COL: warning: message.
	Warnings []string `json:"warnings,omitempty"`
}

// CreatePipelineRequest is the body of POST /pipelines.
type CreatePipelineRequest struct {
	Name       string `json:"name"`
	Definition string `json:"definition"` // YAML
	Repository string `json:"repository,omitempty"`
}

// UpdatePipelineRequest is the body of PUT /pipelines/{id}: nil fields stay
// as they are.
type UpdatePipelineRequest struct {
	Name       *string `json:"name,omitempty"`
	Definition *string `json:"definition,omitempty"`
	Repository *string `json:"repository,omitempty"`
}

// RunStatus is the status of a run.
type RunStatus string

// Run statuses. Waiting means a stage waits for an approval.
const (
	RunQueued    RunStatus = "queued"
	RunRunning   RunStatus = "running"
	RunWaiting   RunStatus = "waiting"
	RunSuccess   RunStatus = "success"
	RunFailure   RunStatus = "failure"
	RunCancelled RunStatus = "cancelled"
	RunTimeout   RunStatus = "timeout"
)

// Done reports whether s is final.
func (s RunStatus) Done() bool {
	switch s {
	case RunSuccess, RunFailure, RunCancelled, RunTimeout:
		return true
	}
	return false
}

// Status is the status of a stage or a step.
type Status string

// Stage and step statuses.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusWaiting   Status = "waiting"
	StatusSuccess   Status = "success"
	StatusFailure   Status = "failure"
	StatusSkipped   Status = "skipped"
	StatusCancelled Status = "cancelled"
	StatusTimeout   Status = "timeout"
)

// Done reports whether s is final.
func (s Status) Done() bool {
	switch s {
	case StatusSuccess, StatusFailure, StatusSkipped, StatusCancelled, StatusTimeout:
		return true
	}
	return false
}

// Run is one execution of a pipeline, with its stage and step tree (GetRun
// fills Stages; lists may leave it empty).
type Run struct {
	ID           string            `json:"id"`
	PipelineID   string            `json:"pipeline_id"`
	PipelineName string            `json:"pipeline_name"`
	Number       int               `json:"run_number"`
	Status       RunStatus         `json:"status"`
	Branch       string            `json:"branch,omitempty"`
	SHA          string            `json:"sha,omitempty"`
	Ref          string            `json:"ref,omitempty"`
	Event        string            `json:"event,omitempty"`
	Variables    map[string]string `json:"variables,omitempty"`
	CreatedAt    time.Time         `json:"created_at"`
	StartedAt    *time.Time        `json:"started_at,omitempty"`
	FinishedAt   *time.Time        `json:"finished_at,omitempty"`
	Stages       []Stage           `json:"stages,omitempty"`
	// Warnings, when the run is triggered, are its pipeline's (see
	// Pipeline.Warnings).
	Warnings []string `json:"warnings,omitempty"`
}

// Stage is a stage instance of a run: a matrix stage has one per
// combination, named like "test (linux, 1.75)".
type Stage struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Index      int        `json:"index"`
	Status     Status     `json:"status"`
	Reason     string     `json:"reason,omitempty"` // why it was skipped or failed
	JobID      string     `json:"job_id,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Approval   *Approval  `json:"approval,omitempty"` // the stage's approval gate, if it has one
	Steps      []Step     `json:"steps,omitempty"`
}

// Approval is a stage's approval gate: the votes cast on it and how many
// approvals it still needs.
type Approval struct {
	ID                string     `json:"id"`
	Status            string     `json:"status"` // pending, approved, rejected or expired
	RequiredApprovers int        `json:"required_approvers"`
	CurrentApprovals  int        `json:"current_approvals"`
	PendingApprovals  int        `json:"pending_approvals"`           // approvals still needed while pending
	AllowedApprovers  []string   `json:"allowed_approvers,omitempty"` // token names or roles; empty: anyone who may approve
	Approvers         []Approver `json:"approvers"`                   // the votes, in order
	CreatedAt         time.Time  `json:"created_at"`
	ExpiresAt         *time.Time `json:"expires_at,omitempty"`
}

// Approver is one vote on an approval gate.
type Approver struct {
	UserID  string    `json:"user_id"`
	Action  string    `json:"action"` // approved or rejected
	Comment string    `json:"comment,omitempty"`
	ActedAt time.Time `json:"acted_at"`
}

// Step is one step of a stage instance.
type Step struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Key      string            `json:"key,omitempty"` // its id in the pipeline: steps.<key>.outputs
	Status   Status            `json:"status"`
	ExitCode *int              `json:"exit_code,omitempty"` // nil until it ran
	Outputs  map[string]string `json:"outputs,omitempty"`
}

// TriggerRequest is the body of POST /pipelines/{id}/runs; empty fields take
// the server's defaults (event "manual").
type TriggerRequest struct {
	Branch    string            `json:"branch,omitempty"`
	SHA       string            `json:"sha,omitempty"`
	Ref       string            `json:"ref,omitempty"`
	Event     string            `json:"event,omitempty"`
	Variables map[string]string `json:"variables,omitempty"`
}

// ListRunsOptions selects a page of a pipeline's runs, newest first.
type ListRunsOptions struct {
	ListOptions
	Status RunStatus // only runs with this status
}

// LogLine is one line of a run's or a job's output.
type LogLine struct {
	Stage   string    `json:"stage,omitempty"`
	Step    string    `json:"step,omitempty"`
	Stream  string    `json:"stream"` // stdout, stderr or system
	Seq     int64     `json:"seq"`
	Attempt int       `json:"attempt"` // the job's attempt that wrote it: 1, 2, …
	Text    string    `json:"text"`
	Time    time.Time `json:"time"`
}

// LogPage is a slice of a log: pass Next back as after to continue. No lines
// and the same Next means nothing new yet.
type LogPage struct {
	Lines []LogLine `json:"lines"`
	Next  string    `json:"next"`
}

// JobState is the state of a job.
type JobState string

// Job states.
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

// Done reports whether s is final.
func (s JobState) Done() bool {
	switch s {
	case JobSucceeded, JobFailed, JobCancelled, JobTimeout:
		return true
	}
	return false
}

// JobSpec is what a job runs: a Command, or Steps.
type JobSpec struct {
	Name        string            `json:"name"`
	Command     string            `json:"command,omitempty"`
	Steps       []JobStep         `json:"steps,omitempty"`
	Shell       string            `json:"shell,omitempty"` // default bash
	Env         map[string]string `json:"env,omitempty"`
	Secrets     []string          `json:"secrets,omitempty"` // names of stored secrets, exposed as environment variables
	Labels      []string          `json:"labels,omitempty"`  // a worker needs all of them
	Priority    int               `json:"priority,omitempty"`
	Timeout     string            `json:"timeout,omitempty"` // a Go duration: "10m"
	MaxAttempts int               `json:"max_attempts,omitempty"`
	Image       string            `json:"image,omitempty"`
	Resources   *Resources        `json:"resources,omitempty"`
}

// JobStep is one step of a JobSpec.
type JobStep struct {
	Name  string `json:"name"`
	Run   string `json:"run"`
	Shell string `json:"shell,omitempty"`
}

// Resources is what a job needs of its worker.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`    // cores: "2", "0.5", "500m"
	Memory string `json:"memory,omitempty"` // "512Mi", "1Gi"
	GPU    int    `json:"gpu,omitempty"`
	Arch   string `json:"arch,omitempty"` // amd64, arm64, …
	OS     string `json:"os,omitempty"`   // linux, darwin, …
}

// Job is the unit that one agent executes.
type Job struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	State       JobState `json:"state"`
	RunID       string   `json:"run_id,omitempty"`   // for a stage of a run; empty for a job submitted directly
	StageID     string   `json:"stage_id,omitempty"` // the stage instance it executes
	Attempt     int      `json:"attempt"`
	MaxAttempts int      `json:"max_attempts"`
	Priority    int      `json:"priority"`
	Labels      []string `json:"labels,omitempty"`
	WorkerID    string   `json:"worker_id,omitempty"`
	ExitCode    *int     `json:"exit_code,omitempty"` // nil until it ran
	Error       string   `json:"error,omitempty"`
	Spec        JobSpec  `json:"spec"`
	// WaitingReason says why a queued job waits when no connected agent
	// could ever take it: "needs 4 GPUs; the largest agent has 0".
	WaitingReason string     `json:"waiting_reason,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

// ListJobsOptions selects a page of jobs.
type ListJobsOptions struct {
	ListOptions
	State JobState // only jobs in this state
	RunID string   // only the jobs of this run
}

// Parameter types of templates.
const (
	ParamString = "string"
	ParamInt    = "int"
	ParamBool   = "bool"
	ParamEnum   = "enum"
)

// Parameter is a typed parameter of a template.
type Parameter struct {
	Name        string `json:"name"` // the placeholder is {{ .name }}
	Type        string `json:"type"` // string, int, bool or enum
	Description string `json:"description,omitempty"`
	Required    bool   `json:"required,omitempty"`
	Default     any    `json:"default,omitempty"`
	Values      []any  `json:"values,omitempty"` // the choices of an enum
}

// Template is a job spec with "{{ .param }}" placeholders in its strings.
type Template struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Version     int         `json:"version,omitempty"` // 1, then +1 on every update
	Parameters  []Parameter `json:"parameters"`
	Spec        JobSpec     `json:"spec"`
	CreatedAt   time.Time   `json:"created_at"`
	UpdatedAt   time.Time   `json:"updated_at"`
}

// TemplateRequest is the body of POST /templates and PUT /templates/{id}.
type TemplateRequest struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Parameters  []Parameter `json:"parameters"`
	Spec        JobSpec     `json:"spec"`
}

// AgentStatus is the status of an agent.
type AgentStatus string

// Agent statuses.
const (
	AgentOnline   AgentStatus = "online"
	AgentBusy     AgentStatus = "busy"
	AgentDraining AgentStatus = "draining"
	AgentOffline  AgentStatus = "offline"
	AgentLost     AgentStatus = "lost"
)

// Agent is a registered worker.
type Agent struct {
	ID       string      `json:"id"`
	Name     string      `json:"name"`
	Labels   []string    `json:"labels,omitempty"`
	Status   AgentStatus `json:"status"`
	Version  string      `json:"version,omitempty"`
	OS       string      `json:"os,omitempty"`
	Arch     string      `json:"arch,omitempty"`
	Capacity int         `json:"capacity"`
	// The machine it reported, which jobs' resources are placed against
	// (0: unknown).
	CPUMillis       int64      `json:"cpu_millis,omitempty"` // CPUs, in thousandths
	MemoryBytes     int64      `json:"memory_bytes,omitempty"`
	GPUs            int        `json:"gpus,omitempty"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at,omitempty"`
	RegisteredAt    time.Time  `json:"registered_at"`
}

// WorkerState is the state of an elastic worker.
type WorkerState string

// Worker states: provisioning until its agent registers, ready while it
// runs, terminating while it is destroyed, then terminated, or failed when
// it did not come up.
const (
	WorkerProvisioning WorkerState = "provisioning"
	WorkerReady        WorkerState = "ready"
	WorkerTerminating  WorkerState = "terminating"
	WorkerTerminated   WorkerState = "terminated"
	WorkerFailed       WorkerState = "failed"
)

// Worker is an elastic worker: an agent that a provider made (a container)
// for the server's autoscaler.
type Worker struct {
	ID       string      `json:"id"`
	Provider string      `json:"provider"` // "docker"
	State    WorkerState `json:"state"`
	AgentID  string      `json:"agent_id,omitempty"` // once its agent registered
	Handle   string      `json:"handle,omitempty"`   // the provider's name for it: a container ID
	Error    string      `json:"error,omitempty"`    // why it failed or ended early
	// Isolation and Isolated are set for a server's own agent: what keeps
	// its jobs from the server's files ("user oxide-runner (uid 998)", or
	// "none: why"), and whether anything does.
	Isolation string `json:"isolation,omitempty"`
	Isolated  *bool  `json:"isolated,omitempty"`
	// Deadline is when a provisioning worker whose agent has not
	// registered is given up.
	Deadline  time.Time `json:"deadline"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ListWorkersOptions selects a page of workers, newest first.
type ListWorkersOptions struct {
	ListOptions
	States   []WorkerState // only workers in one of these states
	Provider string        // only the workers of this provider
}

// Provider is a provider of the server's elastic workers, as it is now.
type Provider struct {
	Name          string              `json:"name"`
	Healthy       bool                `json:"healthy"`
	Error         string              `json:"error,omitempty"`    // why it is unhealthy
	Capacity      *Capacity           `json:"capacity,omitempty"` // nil when the provider cannot tell
	CapacityError string              `json:"capacity_error,omitempty"`
	Workers       map[WorkerState]int `json:"workers"` // its workers by state
}

// Capacity is what a provider's host has and uses.
type Capacity struct {
	CPUs        int   `json:"cpus"`
	MemoryBytes int64 `json:"memory_bytes"`
	Workers     int   `json:"workers"` // running workers of the provider
}

// Secret scopes.
const (
	ScopeOrganization = "organization"
	ScopePipeline     = "pipeline"
)

// SecretInfo describes a stored secret; values are write-only and never
// answered.
type SecretInfo struct {
	Name      string    `json:"name"`
	Scope     string    `json:"scope"`
	ScopeID   string    `json:"scope_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SecretScope names where a secret lives: the zero value is the
// organization.
type SecretScope struct {
	Scope   string // organization (default) or pipeline
	ScopeID string // the pipeline's ID, for the pipeline scope
}

// ListSecretsOptions selects a page of secrets.
type ListSecretsOptions struct {
	ListOptions
	SecretScope
}

// Roles of tokens.
const (
	RoleViewer    = "viewer"
	RoleDeveloper = "developer"
	RoleAdmin     = "admin"
)

// Token is an API token. Secret is set only in CreateToken's answer: the
// server keeps only its hash.
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Secret     string     `json:"token,omitempty"` // "oxt_…"
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// AuditEntry records one mutating call.
type AuditEntry struct {
	ID           string          `json:"id"`
	Time         time.Time       `json:"time"`
	Actor        string          `json:"actor"`  // the token's name
	Action       string          `json:"action"` // pipeline.create, run.trigger, …
	ResourceType string          `json:"resource_type,omitempty"`
	ResourceID   string          `json:"resource_id,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
}

// UnmarshalJSON accepts the entry's id as a string or as a number.
func (e *AuditEntry) UnmarshalJSON(b []byte) error {
	type plain AuditEntry
	var v struct {
		plain
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = AuditEntry(v.plain)
	var s string
	if json.Unmarshal(v.ID, &s) == nil {
		e.ID = s
	} else if len(v.ID) > 0 && string(v.ID) != "null" {
		e.ID = string(v.ID)
	}
	return nil
}

// ListAuditOptions selects a page of the audit log.
type ListAuditOptions struct {
	ListOptions
	Actor        string
	ResourceType string
	ResourceID   string
}

// Event is a message of the event stream: Channel is its subject in the
// AsyncAPI spec ("run.started.{pipeline_id}.{run_id}"), Payload its body.
type Event struct {
	Channel string          `json:"channel"`
	Payload json.RawMessage `json:"payload"`
}
