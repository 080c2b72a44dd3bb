package agentsvc

import (
	"context"
	"errors"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// Supervise checks for lost agents every Config.Supervise until ctx is
// done or the server stops, logging failures.
func (s *Server) Supervise(ctx context.Context) {
	t := time.NewTicker(s.cfg.Supervise)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			return
		case <-t.C:
			if err := s.CheckLost(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("supervise agents", "err", err)
			}
		}
	}
}

// CheckLost marks lost the agents not heard from for Config.AgentTimeout
// (in-process workers included: they heartbeat through the scheduler) and
// fails the leases they hold with reason agent_lost: each job goes back to
// the queue for its next attempt, or fails when its attempts are spent. A
// lease that cannot be failed now expires later.
//
// That covers agents whose stream ended too: one that disconnected from
// this server holding jobs and has not come back within AgentTimeout (it
// crashed, or its machine did) is lost as well. One that held none stays
// offline.
func (s *Server) CheckLost(ctx context.Context) error {
	lost, err := s.store.Agents().MarkLost(ctx, s.cfg.AgentTimeout)
	if err != nil {
		return err
	}
	gone, err := s.goneSilent(ctx)
	lost = append(lost, gone...)
	errs := []error{err}
	for _, a := range lost {
		s.log.Warn("agent lost", "agent_id", a.ID, "agent", a.Name, "last_heartbeat_at", a.LastHeartbeatAt)
		s.events(ctx, event("agent", a.ID, "agent.disconnected", agentDisconnected{
			AgentID: a.ID, Reason: "timeout", LastHeartbeatAt: a.LastHeartbeatAt, DisconnectedAt: time.Now().UTC(),
		}))
		jobs, err := heldJobs(ctx, s.store, a.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, j := range jobs {
			s.log.Info("job of a lost agent handed back", "job_id", j.ID, "agent_id", a.ID, "attempt", j.Attempt)
			if err := s.ctl.FailLease(ctx, j.Lease(), ReasonAgentLost); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// heldJobs returns the jobs an agent holds.
func heldJobs(ctx context.Context, tx store.Tx, agentID string) ([]store.Job, error) {
	var out []store.Job
	for _, st := range []store.JobState{store.JobAssigned, store.JobRunning} {
		jobs, err := tx.Jobs().List(ctx, store.JobFilter{WorkerID: agentID, State: st})
		if err != nil {
			return nil, err
		}
		out = append(out, jobs...)
	}
	return out, nil
}

// goneSilent marks lost, and returns, the agents that disconnected from
// this server holding jobs and have been silent for AgentTimeout since.
func (s *Server) goneSilent(ctx context.Context) ([]store.Agent, error) {
	s.mu.Lock()
	var due []string
	for id, at := range s.offline {
		if time.Since(at) > s.cfg.AgentTimeout {
			due = append(due, id)
		}
	}
	s.mu.Unlock()
	var lost []store.Agent
	var errs []error
	for _, id := range due {
		var a store.Agent
		err := s.store.InTx(ctx, func(tx store.Tx) (err error) {
			if a, err = tx.Agents().Get(ctx, id); err != nil || a.Status != store.AgentOffline ||
				a.LastHeartbeatAt != nil && time.Since(*a.LastHeartbeatAt) <= s.cfg.AgentTimeout {
				a = store.Agent{}
				return err
			}
			if jobs, err := heldJobs(ctx, tx, id); err != nil || len(jobs) == 0 {
				a = store.Agent{}
				return err
			}
			a, err = tx.Agents().SetStatus(ctx, id, store.AgentLost)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		if t, ok := s.offline[id]; ok && time.Since(t) > s.cfg.AgentTimeout {
			delete(s.offline, id)
		}
		s.mu.Unlock()
		if a.ID != "" {
			lost = append(lost, a)
		}
	}
	return lost, errors.Join(errs...)
}
