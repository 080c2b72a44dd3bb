package server

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/plan"
	"github.com/oxide-ci/oxide/internal/store"
)

// outbox adapts the store's outbox to the relay: it names each event's
// subject and shapes its payload. Run, stage and approval gate changes
// become the AsyncAPI events of the reference spec
// (run.started.{pipeline}.{run}, approval.granted.{gate}, …); every
// other change is published on the control plane's own feed,
// oxide.<aggregate>.<what happened>.<id>, with the changed row as payload.
type outbox struct {
	store store.Store
}

func (o outbox) Pending(ctx context.Context, limit int) ([]events.OutboxEvent, error) {
	evs, err := o.store.Outbox().Pending(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]events.OutboxEvent, len(evs))
	for i, ev := range evs {
		subject, payload := o.publication(ctx, ev)
		out[i] = events.OutboxEvent{ID: ev.ID, Subject: subject, Payload: payload, CreatedAt: ev.CreatedAt}
	}
	return out, nil
}

func (o outbox) MarkPublished(ctx context.Context, ids []string) error {
	return o.store.Outbox().MarkPublished(ctx, ids...)
}

// publication returns the subject and payload of a stored event.
func (o outbox) publication(ctx context.Context, ev store.Event) (string, []byte) {
	what := strings.TrimPrefix(ev.Type, ev.Aggregate+".")
	var subject string
	var payload any
	switch ev.Aggregate {
	case "run":
		var r store.Run
		if json.Unmarshal(ev.Payload, &r) == nil {
			subject, payload = o.runEvent(ctx, r, ev.CreatedAt)
		}
	case "stage":
		var s store.Stage
		if json.Unmarshal(ev.Payload, &s) == nil {
			subject, payload = stageEvent(s, ev.CreatedAt)
		}
	case "approval_gate":
		var g store.ApprovalGate
		if json.Unmarshal(ev.Payload, &g) == nil {
			subject, payload = o.approvalEvent(ctx, what, g)
		}
	}
	if subject != "" {
		if b, err := json.Marshal(payload); err == nil {
			return subject, b
		}
	}
	return "oxide." + events.Token(ev.Aggregate) + "." + events.Token(what) + "." + events.Token(ev.AggregateID), ev.Payload
}

// runEvent shapes a run's change as its AsyncAPI event, with what the
// payloads ask beyond the run's row: the pipeline's name, the agent that
// took its first job, and the count of stages passed and failed.
func (o outbox) runEvent(ctx context.Context, r store.Run, at time.Time) (string, any) {
	t := plan.StoredTrigger(r.Trigger)
	var name string
	if p, err := o.store.Pipelines().Get(ctx, r.PipelineID); err == nil {
		name = p.Name
	}
	switch r.Status {
	case store.RunQueued:
		return events.RunQueuedSubject(r.PipelineID), events.RunQueued{
			RunID: r.ID, PipelineID: r.PipelineID, PipelineName: name, RunNumber: r.Number, Trigger: t.Event,
			GitRef: r.GitRef, GitSHA: r.GitSHA, QueuedAt: r.CreatedAt, QueuedBy: t.Actor,
		}
	case store.RunRunning:
		started := at
		if r.StartedAt != nil {
			started = *r.StartedAt
		}
		e := events.RunStarted{RunID: r.ID, PipelineID: r.PipelineID, PipelineName: name, RunNumber: r.Number, StartedAt: started}
		if jobs, err := o.store.Jobs().List(ctx, store.JobFilter{RunID: r.ID}); err == nil {
			for _, j := range jobs {
				if j.WorkerID != "" {
					e.AgentID = j.WorkerID
					break
				}
			}
		}
		return events.RunStartedSubject(r.PipelineID, r.ID), e
	case store.RunCancelled:
		return events.RunCancelledSubject(r.PipelineID, r.ID), events.RunCancelled{
			RunID: r.ID, PipelineID: r.PipelineID, Reason: "user_requested", CancelledAt: at,
		}
	case store.RunSuccess, store.RunFailure, store.RunTimeout:
		e := events.RunCompleted{RunID: r.ID, PipelineID: r.PipelineID, PipelineName: name, RunNumber: r.Number, Status: string(r.Status), CompletedAt: at}
		if r.StartedAt != nil && r.FinishedAt != nil {
			e.DurationMS = r.FinishedAt.Sub(*r.StartedAt).Milliseconds()
		}
		if stages, err := o.store.Stages().List(ctx, r.ID); err == nil {
			for _, s := range stages {
				switch s.Status {
				case store.StatusSuccess:
					e.StagesPassed++
				case store.StatusFailure, store.StatusTimeout, store.StatusCancelled:
					e.StagesFailed++
				}
			}
		}
		return events.RunCompletedSubject(r.PipelineID, r.ID), e
	}
	return "", nil
}

func stageEvent(s store.Stage, at time.Time) (string, any) {
	switch {
	case s.Status == store.StatusRunning:
		return events.StageStartedSubject(s.RunID, s.Name), events.StageStarted{
			RunID: s.RunID, StageName: s.Name, StageIndex: s.Index, StartedAt: at,
		}
	case s.Status.Done():
		e := events.StageCompleted{RunID: s.RunID, StageName: s.Name, StageIndex: s.Index, Status: string(s.Status), CompletedAt: at}
		if s.StartedAt != nil && s.FinishedAt != nil {
			e.DurationMS = s.FinishedAt.Sub(*s.StartedAt).Milliseconds()
		}
		return events.StageCompletedSubject(s.RunID, s.Name), e
	}
	return "", nil
}

// approvalEvent shapes a change of an approval gate, given with its votes
// after the change, as its AsyncAPI event: opened (requested), a vote
// (granted or rejected: the last vote), expired. A gate closed by its votes
// has no event of its own there.
func (o outbox) approvalEvent(ctx context.Context, what string, g store.ApprovalGate) (string, any) {
	r, _ := o.store.Runs().Get(ctx, g.RunID) // the pipeline is optional in the payloads
	switch {
	case what == string(store.ApprovalPending):
		e := events.ApprovalRequested{
			GateID: g.StageID, RunID: g.RunID, PipelineID: r.PipelineID, StageName: g.StageName,
			GitRef: r.GitRef, GitSHA: r.GitSHA, RequiredApprovers: g.Required, AllowedApprovers: g.Approvers,
			ExpiresAt: g.ExpiresAt, RequestedAt: g.CreatedAt,
		}
		e.TriggeredBy = plan.StoredTrigger(r.Trigger).Actor
		if p, err := o.store.Pipelines().Get(ctx, r.PipelineID); err == nil {
			e.PipelineName = p.Name
		}
		return events.ApprovalRequestedSubject(g.StageID), e
	case what == "vote" && len(g.Votes) > 0:
		v := g.Votes[len(g.Votes)-1]
		if v.Decision == store.DecisionRejected {
			return events.ApprovalRejectedSubject(g.StageID), events.ApprovalRejected{
				GateID: g.StageID, RunID: g.RunID, PipelineID: r.PipelineID, StageName: g.StageName,
				RejectedBy: v.User, Reason: v.Comment, RejectedAt: v.CreatedAt,
			}
		}
		n := g.Approvals()
		return events.ApprovalGrantedSubject(g.StageID), events.ApprovalGranted{
			GateID: g.StageID, RunID: g.RunID, PipelineID: r.PipelineID, StageName: g.StageName,
			ApprovedBy: v.User, Comment: v.Comment, CurrentApprovals: n, RequiredApprovals: g.Required,
			FullyApproved: n >= g.Required, ApprovedAt: v.CreatedAt,
		}
	case what == string(store.ApprovalExpired):
		e := events.ApprovalExpired{
			GateID: g.StageID, RunID: g.RunID, PipelineID: r.PipelineID, StageName: g.StageName,
			PendingApprovals: max(g.Required-g.Approvals(), 0),
		}
		if g.ExpiresAt != nil {
			e.TimeoutMinutes = int(g.ExpiresAt.Sub(g.CreatedAt).Round(time.Minute) / time.Minute)
		}
		if g.ClosedAt != nil {
			e.ExpiredAt = *g.ClosedAt
		}
		return events.ApprovalExpiredSubject(g.StageID), e
	}
	return "", nil
}
