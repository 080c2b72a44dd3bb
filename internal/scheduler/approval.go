package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// ErrNotApprover wraps a vote by someone whom the stage's approvers do not
// name; the API answers it 403.
var ErrNotApprover = errors.New("not an approver")

// Vote is one approver's decision on a stage that waits for an approval.
type Vote struct {
	Approve bool
	Actor   string // who votes: an API token's name
	Role    string // the token's role, which a stage's approvers may name instead
	Comment string
}

// mayVote reports whether approvers (token names or roles; none: anyone)
// let v's actor vote.
func mayVote(approvers []string, v Vote) bool {
	return len(approvers) == 0 || slices.Contains(approvers, v.Actor) || v.Role != "" && slices.Contains(approvers, v.Role)
}

// openGate opens the approval gate of node i, whose stage starts waiting,
// with the stage's rules.
func (s *Service) openGate(ctx context.Context, tx store.Tx, st *runState, i int) (store.ApprovalGate, error) {
	n := st.m.Run.Nodes[i]
	g := store.ApprovalGate{StageID: st.stages[i].ID, RunID: st.run.ID, StageName: n.Name, Required: 1}
	var timeout time.Duration
	if a := n.Approval; a != nil {
		g.Required, g.Approvers, timeout = max(a.Required, 1), a.Approvers, a.Timeout
	}
	return tx.Approvals().Open(ctx, g, timeout)
}

// vote records v on the gate of node n, whose stage waits, and acts on the
// outcome: the first rejection cancels the stage, and the approval that
// completes the count queues its job.
func (s *Service) vote(ctx context.Context, tx store.Tx, st *runState, n *plan.Node, v Vote) error {
	sg := st.stages[n.Index]
	g, err := tx.Approvals().Get(ctx, sg.ID)
	if errors.Is(err, store.ErrNotFound) { // waiting since before gates were stored
		g, err = s.openGate(ctx, tx, st, n.Index)
	}
	if err != nil {
		return err
	}
	if !mayVote(g.Approvers, v) {
		return fmt.Errorf("%w: %s may not vote on stage %q, whose approvers are %s", ErrNotApprover, v.Actor, n.Name, strings.Join(g.Approvers, ", "))
	}
	for _, old := range g.Votes {
		if old.User == v.Actor {
			return fmt.Errorf("%w: %s has %s stage %q already", store.ErrConflict, v.Actor, old.Decision, n.Name)
		}
	}
	d := store.DecisionApproved
	if !v.Approve {
		d = store.DecisionRejected
	}
	if g, err = tx.Approvals().Vote(ctx, store.Vote{StageID: sg.ID, User: v.Actor, Decision: d, Comment: v.Comment}); err != nil {
		return err
	}
	if !v.Approve {
		if _, err := tx.Approvals().SetStatus(ctx, sg.ID, store.ApprovalRejected); err != nil {
			return err
		}
		reason := "rejected by " + v.Actor
		if v.Comment != "" {
			reason += ": " + v.Comment
		}
		return s.next(ctx, tx, st, plan.Rejected{Node: n.Index, Status: spec.StatusCancelled, Reason: reason})
	}
	if g.Approvals() < g.Required {
		return nil
	}
	if _, err := tx.Approvals().SetStatus(ctx, sg.ID, store.ApprovalApproved); err != nil {
		return err
	}
	if st.stages[n.Index], err = tx.Stages().SetStatus(ctx, sg.ID, store.StatusRunning); err != nil {
		return err
	}
	return s.next(ctx, tx, st, plan.Approved{Node: n.Index})
}

// ExpireApprovals fails the stages whose approval gates expired at time at
// (the sweep passes the current time; tests pass the time they need): the
// gate is expired, the stage fails with the reason, and its run goes on as
// after a failure.
func (s *Service) ExpireApprovals(ctx context.Context, at time.Time) error {
	gates, err := s.store.Approvals().Expired(ctx, at)
	if err != nil {
		return err
	}
	for _, g := range gates {
		err := s.inRun(ctx, g.RunID, func(tx store.Tx) error {
			st, err := s.load(ctx, tx, g.RunID)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(st.stages, func(sg store.Stage) bool { return sg.ID == g.StageID })
			if i < 0 || st.stages[i].Status != store.StatusWaiting {
				return nil // decided meanwhile
			}
			if _, err := tx.Approvals().SetStatus(ctx, g.StageID, store.ApprovalExpired); err != nil {
				return ignoreConflict(err)
			}
			reason := "approval timed out"
			if g.ExpiresAt != nil {
				reason += fmt.Sprintf(" after %dh", g.ExpiresAt.Sub(g.CreatedAt).Round(time.Hour)/time.Hour)
			}
			return s.next(ctx, tx, st, plan.Rejected{Node: i, Status: spec.StatusFailure, Reason: reason})
		})
		if err != nil {
			return err
		}
	}
	return nil
}
