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
	var stopped []store.Job
	err = s.inRun(ctx, job.RunID, func(tx store.Tx) error {
		j, err := tx.Jobs().Fail(ctx, l, reason)
		if err != nil || !j.State.Done() || j.RunID == "" {
			return err
		}
		failed = j
		stopped, err = s.finished(ctx, tx, j, stageStatus(j.State), j.Error)
		return err
	})
	if err = ignoreConflict(err); err != nil {
		return err
	}
	for _, j := range stopped {
		s.notifyCancel(j.ID, j.Error)
	}
	if failed.ID == "" {
		s.wake() // requeued: a worker may take it
	}
	return nil
}
