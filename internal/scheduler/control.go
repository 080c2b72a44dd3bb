package scheduler

import (
	"context"
	"fmt"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// CancelRun cancels a run that is not done: its unfinished stages and jobs
// are cancelled and the workers running them told to stop. The run.cancel
// audit entry, by actor, is written in the same transaction.
func (s *Service) CancelRun(ctx context.Context, runID, actor string) (store.Run, error) {
	var jobs []store.Job
	err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
		if jobs, err = s.stopRun(ctx, tx, runID, spec.StatusCancelled, "cancelled by "+actor); err != nil {
			return err
		}
		return record(ctx, tx, actor, "run.cancel", "run", runID, nil)
	})
	if err != nil {
		return store.Run{}, err
	}
	for _, j := range jobs {
		s.notifyCancel(j.ID, j.Error)
	}
	return s.store.Runs().Get(ctx, runID)
}

// stopRun ends a run with status (cancelled or timeout): every unfinished
// stage gets that status and every unfinished job is cancelled with
// reason. It returns the jobs that a worker held. ErrConflict if the run is
// done.
func (s *Service) stopRun(ctx context.Context, tx store.Tx, runID string, status spec.Status, reason string) ([]store.Job, error) {
	st, err := s.load(ctx, tx, runID)
	if err != nil {
		return nil, err
	}
	if st.run.Status.Done() {
		return nil, fmt.Errorf("%w: run %s is %s already", store.ErrConflict, runID, st.run.Status)
	}
	err = s.next(ctx, tx, st, plan.Cancel{Status: status, Reason: reason})
	return st.stopped, err
}

// Approve records v on the stage of a run, by name (every waiting instance
// of a matrix stage), that waits for an approval: the stage starts once its
// required approvals are in, and is cancelled at the first rejection.
// ErrNotApprover if the stage's approvers do not name v's actor or role;
// ErrConflict if nothing waits, or the actor voted on the stage already.
// The run.approve or run.reject audit entry, by v's actor, is written in
// the same transaction.
func (s *Service) Approve(ctx context.Context, runID, stage string, v Vote) (store.Run, error) {
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		st, err := s.load(ctx, tx, runID)
		if err != nil {
			return err
		}
		matched := false
		for _, n := range st.m.Run.Nodes {
			if n.Name != stage && n.Stage != stage || st.m.Nodes[n.Index].Status != spec.StatusWaiting {
				continue
			}
			matched = true
			if err := s.vote(ctx, tx, st, n, v); err != nil {
				return err
			}
		}
		if !matched {
			return fmt.Errorf("%w: no stage %q of run %s waits for an approval", store.ErrConflict, stage, runID)
		}
		action := "run.approve"
		if !v.Approve {
			action = "run.reject"
		}
		return record(ctx, tx, v.Actor, action, "run", runID, map[string]string{"stage": stage, "comment": v.Comment})
	})
	if err != nil {
		return store.Run{}, err
	}
	s.wake()
	return s.store.Runs().Get(ctx, runID)
}
