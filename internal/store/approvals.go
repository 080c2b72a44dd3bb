package store

import (
	"context"
	"time"
)

// ApprovalStatus is the status of an approval gate.
type ApprovalStatus string

// Approval gate statuses: pending while its stage waits, then approved,
// rejected or expired, which are final.
const (
	ApprovalPending  ApprovalStatus = "pending"
	ApprovalApproved ApprovalStatus = "approved"
	ApprovalRejected ApprovalStatus = "rejected"
	ApprovalExpired  ApprovalStatus = "expired"
)

// Decision is what a vote on an approval gate says.
type Decision string

// Decisions.
const (
	DecisionApproved Decision = "approved"
	DecisionRejected Decision = "rejected"
)

// ApprovalGate is the manual approval that a stage instance waits for: the
// stage's rules, copied when it started waiting, and the votes cast on it.
// A stage has at most one; its ID is the stage's.
type ApprovalGate struct {
	StageID   string         `json:"stage_id"`
	RunID     string         `json:"run_id"`
	StageName string         `json:"stage_name"`
	Required  int            `json:"required_approvers"`          // approvals that let the stage start
	Approvers []string       `json:"allowed_approvers,omitempty"` // who may vote; empty: anyone allowed to approve
	Status    ApprovalStatus `json:"status"`
	Votes     []Vote         `json:"votes,omitempty"` // in the order they were cast
	CreatedAt time.Time      `json:"created_at"`
	ExpiresAt *time.Time     `json:"expires_at,omitempty"` // nil: never
	ClosedAt  *time.Time     `json:"closed_at,omitempty"`  // when it left pending
}

// Approvals counts the gate's votes that approve.
func (g ApprovalGate) Approvals() int {
	n := 0
	for _, v := range g.Votes {
		if v.Decision == DecisionApproved {
			n++
		}
	}
	return n
}

// Vote is one user's decision on an approval gate.
type Vote struct {
	StageID   string    `json:"stage_id"`
	User      string    `json:"user"` // who voted: an API token's name
	Decision  Decision  `json:"decision"`
	Comment   string    `json:"comment,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Approvals stores approval gates and their votes. The rules (who may vote,
// how many approvals suffice) are the caller's; the store keeps one vote
// per user and gate. Events, whose payload is the gate with its votes
// after the change: approval_gate.pending on Open, approval_gate.vote on
// Vote (the new vote is the last), approval_gate.<status> on SetStatus.
type Approvals interface {
	// Open stores g as a pending gate that expires timeout from now (the
	// database's clock; never when timeout is 0). ErrConflict if the stage
	// has a gate; ErrNotFound if the stage does not exist; ErrInvalid
	// when Required is below 1.
	Open(ctx context.Context, g ApprovalGate, timeout time.Duration) (ApprovalGate, error)
	// Get returns a stage's gate with its votes.
	Get(ctx context.Context, stageID string) (ApprovalGate, error)
	// List returns a run's gates with their votes, by creation.
	List(ctx context.Context, runID string) ([]ApprovalGate, error)
	// Vote adds v (CreatedAt now) to the pending gate of v.StageID and
	// returns the gate. ErrConflict if v.User voted on it already or it is
	// not pending; ErrNotFound without a gate; ErrInvalid without a user
	// or with an unknown decision.
	Vote(ctx context.Context, v Vote) (ApprovalGate, error)
	// SetStatus closes a pending gate with a final status, stamping
	// ClosedAt. ErrConflict if it is not pending.
	SetStatus(ctx context.Context, stageID string, status ApprovalStatus) (ApprovalGate, error)
	// Expired returns the pending gates whose ExpiresAt is at or before at
	// and whose stage still waits, oldest first.
	Expired(ctx context.Context, at time.Time) ([]ApprovalGate, error)
}
