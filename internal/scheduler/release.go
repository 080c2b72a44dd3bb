package scheduler

import (
	"context"
	"fmt"
	"strings"
	"time"

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
	var j store.Job
	var stopped []store.Job
	err = s.inRun(ctx, job.RunID, func(tx store.Tx) (err error) {
		j, stopped, err = s.failLease(ctx, tx, l, reason)
		return err
	})
	if err = ignoreConflict(err); err != nil {
		return err
	}
	for _, j := range stopped {
		s.notifyCancel(j.ID, j.Error)
	}
	if j.ID != "" && !j.State.Done() {
		s.wake() // requeued: a worker may take it
	}
	return nil
}

// failLease is FailLease inside tx, which holds the job's run. It returns
// the job and the jobs that workers must be told to stop.
func (s *Service) failLease(ctx context.Context, tx store.Tx, l store.Lease, reason string) (store.Job, []store.Job, error) {
	j, err := tx.Jobs().Fail(ctx, l, reason)
	if err != nil || !j.State.Done() || j.RunID == "" {
		return j, nil, err
	}
	stopped, err := s.finished(ctx, tx, j, stageStatus(j.State), j.Error)
	return j, stopped, err
}

// attemptLine is the system line that opens attempt j.Attempt > 1 of a job,
// with why the attempt before failed: "attempt 2 of 3 after agent lost". Its
// Seq, the attempt in the high bits and 0 below, puts it before the lines
// of the attempt's worker (numbered from 1) and after the earlier
// attempts'.
func attemptLine(j store.Job) store.LogLine {
	text := fmt.Sprintf("attempt %d of %d", j.Attempt, j.MaxAttempts)
	if j.Error != "" {
		reason := j.Error
		if rest, ok := strings.CutPrefix(reason, ReasonAgentLost); ok {
			reason = "agent lost" + rest
		}
		text += " after " + reason
	}
	return store.LogLine{Seq: int64(j.Attempt) << 32, Attempt: j.Attempt, Stream: "system", Text: text, Time: time.Now().UTC()}
}
