package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// Sweep does the periodic work of the control plane once: agents silent
// for Config.AgentTimeout are lost and their jobs go back to the queue
// (agent_lost); then jobs whose leases expired go back to the queue
// ("lease expired"), so that a job whose agent is lost, and whose lease
// expires with the same silence, is reported as the agent's; jobs that
// were on their last attempt fail instead, which advances their runs. Runs
// past their pipeline's timeout end with status timeout, and expired
// approval gates fail their stages. An agent that cannot be marked lost
// holds up none of the rest.
func (s *Service) Sweep(ctx context.Context) (err error) {
	requeued, lostErr := s.lostAgents(ctx)
	defer func() { err = errors.Join(lostErr, err) }()
	expired, err := s.store.Jobs().RequeueExpired(ctx)
	if err != nil {
		return err
	}
	for _, j := range expired {
		if !j.State.Done() {
			requeued = true
			continue
		}
		if j.RunID == "" {
			continue
		}
		var stopped []store.Job
		err := s.inRun(ctx, j.RunID, func(tx store.Tx) (err error) {
			stopped, err = s.finished(ctx, tx, j, stageStatus(j.State), j.Error)
			return err
		})
		if err != nil {
			return err
		}
		for _, j := range stopped {
			s.notifyCancel(j.ID, j.Error)
		}
	}
	if requeued {
		s.wake()
	}
	if err := s.timeouts(ctx); err != nil {
		return err
	}
	return s.ExpireApprovals(ctx, now())
}

// timeouts stops the running runs that exceeded their pipeline's timeout.
func (s *Service) timeouts(ctx context.Context) error {
	for _, status := range []store.RunStatus{store.RunRunning, store.RunWaiting} {
		runs, err := s.store.Runs().List(ctx, store.RunFilter{Status: status})
		if err != nil {
			return err
		}
		for _, r := range runs {
			c, err := s.compiled(r)
			if err != nil || r.StartedAt == nil || c.Timeout <= 0 || time.Since(*r.StartedAt) < c.Timeout {
				continue
			}
			var held []store.Job
			err = s.store.InTx(ctx, func(tx store.Tx) (err error) {
				held, err = s.stopRun(ctx, tx, r.ID, spec.StatusTimeout, "the pipeline timed out")
				return ignoreConflict(err)
			})
			if err != nil {
				return err
			}
			for _, j := range held {
				s.notifyCancel(j.ID, j.Error)
			}
		}
	}
	return nil
}

// Run sweeps every interval until ctx is done, logging failures.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("sweep", "err", err)
			}
		}
	}
}
