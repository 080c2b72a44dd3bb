package events

import "time"

// Approval gate payloads (spec/schemas/approval.yaml). A gate is a stage
// instance that waits for a manual approval; its gate_id is the stage's ID.

// ApprovalRequested is ApprovalRequestedPayload.
type ApprovalRequested struct {
	GateID            string     `json:"gate_id"`
	RunID             string     `json:"run_id"`
	PipelineID        string     `json:"pipeline_id,omitempty"`
	PipelineName      string     `json:"pipeline_name,omitempty"`
	StageName         string     `json:"stage_name"`
	TriggeredBy       string     `json:"triggered_by,omitempty"`
	GitRef            string     `json:"git_ref,omitempty"`
	GitSHA            string     `json:"git_sha,omitempty"`
	RequiredApprovers int        `json:"required_approvers"`
	AllowedApprovers  []string   `json:"allowed_approvers,omitempty"`
	ExpiresAt         *time.Time `json:"expires_at,omitempty"`
	RequestedAt       time.Time  `json:"requested_at"`
}

// ApprovalGranted is ApprovalGrantedPayload: one approval, which may not
// be the last one needed.
type ApprovalGranted struct {
	GateID            string    `json:"gate_id"`
	RunID             string    `json:"run_id"`
	PipelineID        string    `json:"pipeline_id,omitempty"`
	StageName         string    `json:"stage_name"`
	ApprovedBy        string    `json:"approved_by"`
	Comment           string    `json:"comment,omitempty"`
	CurrentApprovals  int       `json:"current_approvals"`
	RequiredApprovals int       `json:"required_approvals"`
	FullyApproved     bool      `json:"fully_approved"`
	ApprovedAt        time.Time `json:"approved_at"`
}

// ApprovalRejected is ApprovalRejectedPayload.
type ApprovalRejected struct {
	GateID     string    `json:"gate_id"`
	RunID      string    `json:"run_id"`
	PipelineID string    `json:"pipeline_id,omitempty"`
	StageName  string    `json:"stage_name"`
	RejectedBy string    `json:"rejected_by"`
	Reason     string    `json:"reason,omitempty"`
	RejectedAt time.Time `json:"rejected_at"`
}

// ApprovalExpired is ApprovalExpiredPayload.
type ApprovalExpired struct {
	GateID           string    `json:"gate_id"`
	RunID            string    `json:"run_id"`
	PipelineID       string    `json:"pipeline_id,omitempty"`
	StageName        string    `json:"stage_name"`
	PendingApprovals int       `json:"pending_approvals"`
	TimeoutMinutes   int       `json:"timeout_minutes,omitempty"`
	ExpiredAt        time.Time `json:"expired_at"`
}
