package scheduler

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// ReasonAgentLost is the error of an attempt whose agent was lost.
const ReasonAgentLost = "agent_lost"

// AgentDisconnected is the payload of agent.disconnected, as the AsyncAPI
// AgentDisconnectedPayload.
type AgentDisconnected struct {
	AgentID         string     `json:"agent_id"`
	Reason          string     `json:"reason"` // graceful, timeout or error
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at,omitempty"`
	DisconnectedAt  time.Time  `json:"disconnected_at"`
}

// lostAgents marks lost the agents silent for Config.AgentTimeout, connected
// or holding jobs (store.Agents.Silent), and reports whether jobs went back to the queue. Each agent is lost in one
// transaction: its status (agent.lost), the agent.disconnected event, and
// its leases failed with ReasonAgentLost, each job requeued for its next
// attempt or failed once its attempts are spent (which advances its run).
// Nothing is lost during the first AgentTimeout of the service: agents have
// had no chance to reach a server that just started.
func (s *Service) lostAgents(ctx context.Context) (requeued bool, err error) {
	if s.agentTimeout <= 0 || time.Since(s.started) < s.agentTimeout {
		return false, nil
	}
	silent, err := s.store.Agents().Silent(ctx, s.agentTimeout)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, a := range silent {
		held, err := heldJobs(ctx, s.store, a.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var failed, stopped []store.Job
		err = s.store.InTx(ctx, func(tx store.Tx) error {
			// Runs first, as in inRun, then the agent and the jobs.
			var runs []string
			for _, j := range held {
				if j.RunID != "" && !slices.Contains(runs, j.RunID) {
					runs = append(runs, j.RunID)
				}
			}
			slices.Sort(runs)
			for _, id := range runs {
				if _, err := tx.Runs().Lock(ctx, id); err != nil {
					return err
				}
			}
			lost, err := tx.Agents().MarkLost(ctx, a.ID, s.agentTimeout)
			if err != nil {
				return err
			}
			ev, err := store.NewEvent("agent", a.ID, "agent.disconnected", AgentDisconnected{
				AgentID: a.ID, Reason: "timeout", LastHeartbeatAt: lost.LastHeartbeatAt, DisconnectedAt: now(),
			})
			if err != nil {
				return err
			}
			if err := tx.Outbox().Append(ctx, ev); err != nil {
				return err
			}
			for _, j := range held {
				f, stop, err := s.failLease(ctx, tx, j.Lease(), ReasonAgentLost)
				if ignoreConflict(err) != nil {
					return err
				}
				if err == nil {
					failed = append(failed, f)
					stopped = append(stopped, stop...)
				}
			}
			return nil
		})
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			continue // heard from since, lost by another server, or deleted
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Warn("agent lost", "agent_id", a.ID, "agent", a.Name, "last_heartbeat_at", a.LastHeartbeatAt)
		for _, j := range stopped {
			s.notifyCancel(j.ID, j.Error)
		}
		for _, j := range failed {
			s.log.Info("job of a lost agent handed back", "job_id", j.ID, "agent_id", a.ID, "attempt", j.Attempt, "state", j.State)
			requeued = requeued || !j.State.Done()
		}
	}
	return requeued, errors.Join(errs...)
}

// heldJobs returns the jobs an agent holds: assigned or running.
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
