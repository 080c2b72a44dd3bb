package scheduler_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

// gate returns the approval gate of a run's stage.
func (b *bundle) gate(t *testing.T, runID, stage string) store.ApprovalGate {
	t.Helper()
	gates, err := b.store.Approvals().List(t.Context(), runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gates {
		if g.StageName == stage {
			return g
		}
	}
	t.Fatalf("run %s has no approval gate for stage %q", runID, stage)
	return store.ApprovalGate{}
}

// events returns the types of the outbox's events about one aggregate.
func (b *bundle) events(t *testing.T, aggregateID string) []string {
	t.Helper()
	evs, err := b.store.Outbox().Pending(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		if e.AggregateID == aggregateID {
			types = append(types, e.Type)
		}
	}
	return types
}

// reason returns why a run's stage ended: its job's error.
func (b *bundle) reason(t *testing.T, runID, stageID string) string {
	t.Helper()
	jobs, err := b.store.Jobs().List(t.Context(), store.JobFilter{RunID: runID})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.StageID == stageID {
			return j.Error
		}
	}
	t.Fatalf("no job for stage %s", stageID)
	return ""
}

const twoApprovers = `
version: "1"
name: gated
stages:
  - name: build
    steps: [{name: s, run: "true"}]
  - name: deploy
    approval: {required: true, approvers: [alice, bob, admin], required_approvers: 2, timeout_hours: 2}
    steps: [{name: s, run: echo deployed}]
  - name: notify
    steps: [{name: s, run: echo notified}]
  - name: cleanup
    depends_on: [deploy]
    condition: failure()
    steps: [{name: s, run: echo cleaned}]
`

func TestApprovalNeedsTwoListedApprovers(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := t.Context()
	r := b.trigger(t, twoApprovers, scheduler.TriggerRequest{})
	b.waitRun(t, r.ID, store.RunWaiting)
	g := b.gate(t, r.ID, "deploy")
	if g.Status != store.ApprovalPending || g.Required != 2 || !slices.Equal(g.Approvers, []string{"alice", "bob", "admin"}) || g.ExpiresAt == nil {
		t.Fatalf("gate %+v", g)
	}
	if got := b.events(t, g.StageID); !slices.Contains(got, "approval_gate.pending") {
		t.Errorf("events of the gate %q", got)
	}

	// Someone the approvers do not name, by name or role, may not vote.
	_, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "mallory", Role: "developer"})
	if !errors.Is(err, scheduler.ErrNotApprover) {
		t.Fatalf("unlisted approver: %v", err)
	}

	// One approval of two: the stage still waits; a second vote by the same user is refused.
	run, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "alice", Role: "developer", Comment: "lgtm"})
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != store.RunWaiting || b.stages(t, r.ID)["deploy"] != store.StatusWaiting {
		t.Fatalf("after one approval: run %s, stages %v", run.Status, b.stages(t, r.ID))
	}
	for _, approve := range []bool{true, false} {
		_, err = b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: approve, Actor: "alice", Role: "developer"})
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second vote (approve %t): %v", approve, err)
		}
	}
	if g := b.gate(t, r.ID, "deploy"); len(g.Votes) != 1 || g.Votes[0].User != "alice" || g.Votes[0].Comment != "lgtm" {
		t.Fatalf("votes %+v", g.Votes)
	}

	// The second approver, named by its role: the stage starts.
	if _, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "root", Role: "admin"}); err != nil {
		t.Fatal(err)
	}
	b.waitRun(t, r.ID, store.RunSuccess)
	if got := b.logs(t, r.ID, "deploy"); !slices.Equal(got, []string{"deployed"}) {
		t.Errorf("deploy logs %q", got)
	}
	g = b.gate(t, r.ID, "deploy")
	if g.Status != store.ApprovalApproved || g.Approvals() != 2 {
		t.Errorf("gate %+v", g)
	}
	got := b.events(t, g.StageID)
	if i := slices.Index(got, "approval_gate.approved"); i < 2 || !slices.Equal(got[i-2:i+2], []string{"approval_gate.vote", "approval_gate.vote", "approval_gate.approved", "stage.running"}) {
		t.Errorf("events of the gate %q", got)
	}
}

func TestApprovalRejected(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := t.Context()
	r := b.trigger(t, twoApprovers, scheduler.TriggerRequest{})
	b.waitRun(t, r.ID, store.RunWaiting)
	if _, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Actor: "bob", Comment: "not on a Friday"}); err != nil {
		t.Fatal(err)
	}
	run := b.waitRun(t, r.ID, store.RunFailure, store.RunSuccess)
	stages := b.stages(t, r.ID)
	if run.Status != store.RunFailure || stages["deploy"] != store.StatusCancelled || stages["notify"] != store.StatusSkipped ||
		stages["cleanup"] != store.StatusSuccess {
		t.Fatalf("rejected: run %s, stages %v", run.Status, stages)
	}
	g := b.gate(t, r.ID, "deploy")
	if g.Status != store.ApprovalRejected {
		t.Errorf("gate %+v", g)
	}
	if got := b.reason(t, r.ID, g.StageID); got != "rejected by bob: not on a Friday" {
		t.Errorf("reason %q", got)
	}
	_, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "admin"})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("vote after the rejection: %v", err)
	}
}

func TestApprovalExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := t.Context()
	r := b.trigger(t, twoApprovers, scheduler.TriggerRequest{})
	b.waitRun(t, r.ID, store.RunWaiting)
	if _, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	g := b.gate(t, r.ID, "deploy")
	if got := g.ExpiresAt.Sub(g.CreatedAt); got != 2*time.Hour {
		t.Fatalf("gate expires %v after it opened", got)
	}

	// The clock is the argument: a second early, nothing; on time, the gate fails.
	if err := b.svc.ExpireApprovals(ctx, g.ExpiresAt.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := b.stages(t, r.ID)["deploy"]; got != store.StatusWaiting {
		t.Fatalf("before its expiry the stage is %s", got)
	}
	if err := b.svc.ExpireApprovals(ctx, *g.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	run := b.waitRun(t, r.ID, store.RunFailure, store.RunSuccess)
	stages := b.stages(t, r.ID)
	if run.Status != store.RunFailure || stages["deploy"] != store.StatusFailure || stages["notify"] != store.StatusSkipped ||
		stages["cleanup"] != store.StatusSuccess {
		t.Fatalf("expired: run %s, stages %v", run.Status, stages)
	}
	if got := b.reason(t, r.ID, g.StageID); got != "approval timed out after 2h" {
		t.Errorf("reason %q", got)
	}
	if g := b.gate(t, r.ID, "deploy"); g.Status != store.ApprovalExpired || g.ClosedAt == nil {
		t.Errorf("gate %+v", g)
	}
	if got := b.events(t, g.StageID); !slices.Contains(got, "approval_gate.expired") {
		t.Errorf("events of the gate %q", got)
	}
	_, err := b.svc.Approve(ctx, r.ID, "deploy", scheduler.Vote{Approve: true, Actor: "bob"})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("vote after the expiry: %v", err)
	}
}
