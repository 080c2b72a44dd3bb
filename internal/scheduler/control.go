package scheduler

import (
	"context"
	"fmt"

	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// CancelRun cancels a run that is not done: its unfinished stages and jobs
// are cancelled and the workers running them told to stop.
func (s *Service) CancelRun(ctx context.Context, runID, actor string) (store.Run, error) {
	var jobs []store.Job
	err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
		jobs, err = s.stopRun(ctx, tx, runID, spec.StatusCancelled, "cancelled by "+actor)
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

// Approve records the approval (or rejection) of a stage that waits for
// one: an approved stage's job is queued, a rejected stage is cancelled.
func (s *Service) Approve(ctx context.Context, runID, stage string, approve bool, actor, comment string) (store.Run, error) {
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
			var ev plan.Event = plan.Approved{Node: n.Index}
			if !approve {
				reason := "rejected by " + actor
				if comment != "" {
					reason += ": " + comment
				}
				ev = plan.Rejected{Node: n.Index, Status: spec.StatusCancelled, Reason: reason}
			}
			if err := s.next(ctx, tx, st, ev); err != nil {
				return err
			}
		}
		if !matched {
			return fmt.Errorf("%w: no stage %q of run %s waits for an approval", store.ErrConflict, stage, runID)
		}
		return nil
	})
	if err != nil {
		return store.Run{}, err
	}
	s.wake()
	return s.store.Runs().Get(ctx, runID)
}
