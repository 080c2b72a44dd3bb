package scheduler

import (
	"context"
	"fmt"

	"github.com/oxide-ci/oxide/internal/store"
)

// CancelRun cancels a run that is not done: its unfinished stages and jobs
// are cancelled and the workers running them told to stop.
func (s *Service) CancelRun(ctx context.Context, runID, actor string) (store.Run, error) {
	var jobs []store.Job
	err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
		jobs, err = s.stopRun(ctx, tx, runID, store.RunCancelled, "cancelled by "+actor)
		return err
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
func (s *Service) stopRun(ctx context.Context, tx store.Tx, runID string, status store.RunStatus, reason string) ([]store.Job, error) {
	st, err := s.load(ctx, tx, runID)
	if err != nil {
		return nil, err
	}
	if st.run.Status.Done() {
		return nil, fmt.Errorf("%w: run %s is %s already", store.ErrConflict, runID, st.run.Status)
	}
	stageStatus := store.StatusCancelled
	if status == store.RunTimeout {
		stageStatus = store.StatusTimeout
	}
	var held []store.Job
	for _, n := range st.rg.graph.Nodes {
		if st.stages[n.Index].Status.Done() {
			continue
		}
		j := st.jobs[n.Index]
		if err := s.endStage(ctx, tx, st, n, stageStatus, reason); err != nil {
			return nil, err
		}
		if j.State == store.JobAssigned || j.State == store.JobRunning {
			held = append(held, st.jobs[n.Index])
		}
	}
	if _, err := tx.Runs().SetStatus(ctx, runID, status); err != nil {
		return nil, err
	}
	s.forget(runID)
	return held, s.releaseGroup(ctx, tx, st)
}

// Approve records v on the stage of a run, by name (every waiting instance
// of a matrix stage), that waits for an approval: the stage starts once its
// required approvals are in, and is cancelled at the first rejection.
// ErrNotApprover if the stage's approvers do not name v's actor or role;
// ErrConflict if nothing waits, or the actor voted on the stage already.
func (s *Service) Approve(ctx context.Context, runID, stage string, v Vote) (store.Run, error) {
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		st, err := s.load(ctx, tx, runID)
		if err != nil {
			return err
		}
		matched := false
		for _, n := range st.rg.graph.Nodes {
			if n.Name != stage && n.Source.Name != stage || st.stages[n.Index].Status != store.StatusWaiting {
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
		if v.Approve {
			return s.settle(ctx, tx, st)
		}
		return s.advance(ctx, tx, runID) // dependents of a rejected stage
	})
	if err != nil {
		return store.Run{}, err
	}
	s.wake()
	return s.store.Runs().Get(ctx, runID)
}
