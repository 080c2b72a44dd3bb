// Package events defines the events of a run, with the names and fields of
// the reference AsyncAPI specification (spec/schemas/run.yaml, stage.yaml,
// step.yaml), so that the local runner's JSON output, the server's NATS
// subjects and WebSocket payloads all speak the same language.
package events

import "time"

// Type is an event's name as it appears in the "type" field of JSON output.
type Type string

// Event types.
const (
	TypeRunStarted     Type = "run_started"
	TypeRunCompleted   Type = "run_completed"
	TypeStageStarted   Type = "stage_started"
	TypeStageCompleted Type = "stage_completed"
	TypeStepStarted    Type = "step_started"
	TypeStepOutput     Type = "step_output"
	TypeStepCompleted  Type = "step_completed"
)

// RunQueued is RunQueuedPayload.
type RunQueued struct {
	RunID        string    `json:"run_id"`
	PipelineID   string    `json:"pipeline_id"`
	PipelineName string    `json:"pipeline_name"`
	RunNumber    int       `json:"run_number"`
	Trigger      string    `json:"trigger"`
	GitRef       string    `json:"git_ref,omitempty"`
	GitSHA       string    `json:"git_sha,omitempty"`
	QueuedAt     time.Time `json:"queued_at"`
	QueuedBy     string    `json:"queued_by,omitempty"`
}

// RunCancelled is RunCancelledPayload.
type RunCancelled struct {
	RunID       string    `json:"run_id"`
	PipelineID  string    `json:"pipeline_id"`
	CancelledBy string    `json:"cancelled_by,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	CancelledAt time.Time `json:"cancelled_at"`
}

// RunStarted is RunStartedPayload.
type RunStarted struct {
	RunID        string    `json:"run_id"`
	PipelineID   string    `json:"pipeline_id"`
	PipelineName string    `json:"pipeline_name,omitempty"`
	RunNumber    int       `json:"run_number,omitempty"`
	AgentID      string    `json:"agent_id"`
	AgentName    string    `json:"agent_name,omitempty"`
	StartedAt    time.Time `json:"started_at"`
}

// RunCompleted is RunCompletedPayload.
type RunCompleted struct {
	RunID        string    `json:"run_id"`
	PipelineID   string    `json:"pipeline_id"`
	PipelineName string    `json:"pipeline_name,omitempty"`
	RunNumber    int       `json:"run_number,omitempty"`
	Status       string    `json:"status"`
	DurationMS   int64     `json:"duration_ms"`
	StagesPassed int       `json:"stages_passed"`
	StagesFailed int       `json:"stages_failed"`
	CompletedAt  time.Time `json:"completed_at"`
}

// StageStarted is StageStartedPayload.
type StageStarted struct {
	RunID      string    `json:"run_id"`
	StageName  string    `json:"stage_name"`
	StageIndex int       `json:"stage_index"`
	StepCount  int       `json:"step_count"`
	StartedAt  time.Time `json:"started_at"`
}

// StageCompleted is StageCompletedPayload.
type StageCompleted struct {
	RunID       string    `json:"run_id"`
	StageName   string    `json:"stage_name"`
	StageIndex  int       `json:"stage_index"`
	Status      string    `json:"status"`
	DurationMS  int64     `json:"duration_ms"`
	StepsPassed int       `json:"steps_passed"`
	StepsFailed int       `json:"steps_failed"`
	Reason      string    `json:"reason,omitempty"` // why a stage was skipped or failed before running
	CompletedAt time.Time `json:"completed_at"`
}

// StepStarted is StepStartedPayload.
type StepStarted struct {
	RunID     string    `json:"run_id"`
	StageName string    `json:"stage_name"`
	StepID    string    `json:"step_id"`
	StepName  string    `json:"step_name"`
	Plugin    string    `json:"plugin,omitempty"`
	Attempt   int       `json:"attempt,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// StepOutput is StepOutputPayload: one line a step printed.
type StepOutput struct {
	RunID      string    `json:"run_id"`
	StageName  string    `json:"stage_name"`
	StepID     string    `json:"step_id"`
	Stream     string    `json:"stream"`
	Line       string    `json:"line"`
	LineNumber int       `json:"line_number"`
	Attempt    int       `json:"attempt"` // the job's attempt that printed it
	Timestamp  time.Time `json:"timestamp"`
}

// StepCompleted is StepCompletedPayload.
type StepCompleted struct {
	RunID       string    `json:"run_id"`
	StageName   string    `json:"stage_name"`
	StepID      string    `json:"step_id"`
	StepName    string    `json:"step_name"`
	Plugin      string    `json:"plugin,omitempty"`
	Status      string    `json:"status"`
	ExitCode    int       `json:"exit_code"`
	DurationMS  int64     `json:"duration_ms"`
	Error       string    `json:"error,omitempty"`
	CompletedAt time.Time `json:"completed_at"`
}
