package agentsvc

import (
	"context"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// Events of the service, added to the store's outbox (published as
// oxide.<aggregate>.<what>.<id>), besides those the store writes itself
// (agent.registered, agent.<status>, job.<state>): agent.disconnected
// (scheduler.AgentDisconnected), job.dispatched, job.accepted,
// job.rejected. Heartbeats are not state changes: they are published live
// only (agent.<id>.heartbeat).

// jobDispatch is the payload of job.dispatched, job.accepted and
// job.rejected.
type jobDispatch struct {
	JobID   string `json:"job_id"`
	RunID   string `json:"run_id,omitempty"`
	AgentID string `json:"agent_id"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason,omitempty"`
}

// heartbeatEvent is the payload published on agent.<id>.heartbeat, as the
// AsyncAPI AgentHeartbeatPayload, with the jobs the agent runs.
type heartbeatEvent struct {
	AgentID       string        `json:"agent_id"`
	Status        string        `json:"status"` // idle, busy or draining
	CurrentRunID  string        `json:"current_run_id,omitempty"`
	SystemMetrics systemMetrics `json:"system_metrics"`
	RunningJobs   []string      `json:"running_jobs,omitempty"`
	Timestamp     time.Time     `json:"timestamp"`
}

type systemMetrics struct {
	CPUPercent       float64 `json:"cpu_percent"`
	MemoryUsedBytes  int64   `json:"memory_used_bytes"`
	MemoryTotalBytes int64   `json:"memory_total_bytes"`
	DiskFreeBytes    int64   `json:"disk_free_bytes"`
}

// event makes an outbox event; a payload that does not encode (never: the
// payloads are plain structs) makes none.
func event(aggregate, id, typ string, payload any) store.Event {
	ev, _ := store.NewEvent(aggregate, id, typ, payload)
	return ev
}

func appendEvent(ctx context.Context, tx store.Tx, aggregate, id, typ string, payload any) error {
	ev, err := store.NewEvent(aggregate, id, typ, payload)
	if err != nil {
		return err
	}
	return tx.Outbox().Append(ctx, ev)
}

// events adds events to the outbox, logging a failure: they report what
// happened, they do not make it happen.
func (s *Server) events(ctx context.Context, evs ...store.Event) {
	if len(evs) == 0 {
		return
	}
	if err := s.store.Outbox().Append(context.WithoutCancel(ctx), evs...); err != nil {
		s.log.Warn("append events", "type", evs[0].Type, "err", err)
	}
}
