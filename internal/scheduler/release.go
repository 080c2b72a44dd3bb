package scheduler

import (
	"context"

	"github.com/oxide-ci/oxide/internal/store"
)

// FailLease ends an attempt that failed for a reason outside the job — its
// worker shut down before finishing it, or its agent was lost: the job goes
// back to the queue for its next attempt, or fails with reason when its
// attempts are spent, which advances its run. A lease that is no longer
// current changes nothing.
func (s *Service) FailLease(ctx context.Context, l store.Lease, reason string) error {
	job, err := s.store.Jobs().Get(ctx, l.JobID)
	if err != nil {
		return err
	}
	var failed store.Job
	err = s.inRun(ctx, job.RunID, func(tx store.Tx) error {
		j, err := tx.Jobs().Fail(ctx, l, reason)
		if err != nil || !j.State.Done() || j.RunID == "" {
			return err
		}
		failed = j
		if _, err := tx.Stages().SetStatus(ctx, j.StageID, stageStatus(j.State)); ignoreConflict(err) != nil {
			return err
		}
		return s.advance(ctx, tx, j.RunID)
	})
	if err = ignoreConflict(err); err != nil {
		return err
	}
	if failed.ID == "" {
		s.wake() // requeued: a worker may take it
	}
	return nil
}
