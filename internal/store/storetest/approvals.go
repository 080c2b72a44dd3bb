package storetest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

func testApprovals(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	noErr(t, err)
	r, err := st.Runs().Create(ctx, store.Run{PipelineID: p.ID})
	noErr(t, err)
	ss, err := st.Stages().Create(ctx,
		store.Stage{RunID: r.ID, Index: 0, Name: "deploy"},
		store.Stage{RunID: r.ID, Index: 1, Name: "release"},
		store.Stage{RunID: r.ID, Index: 2, Name: "announce"})
	noErr(t, err)
	deploy, release, announce := ss[0].ID, ss[1].ID, ss[2].ID
	as := st.Approvals()

	// Open: pending, expiring timeout later, once per stage.
	g, err := as.Open(ctx, store.ApprovalGate{StageID: deploy, RunID: r.ID, StageName: "deploy", Required: 2,
		Approvers: []string{"alice", "bob", "admin"}}, 24*time.Hour)
	noErr(t, err)
	fresh(t, "CreatedAt", g.CreatedAt)
	if g.Status != store.ApprovalPending || g.Required != 2 || g.ExpiresAt == nil || !g.ExpiresAt.Equal(g.CreatedAt.Add(24*time.Hour)) ||
		g.ClosedAt != nil || len(g.Votes) != 0 || !slices.Equal(g.Approvers, []string{"alice", "bob", "admin"}) {
		t.Fatalf("opened %s", dump(g))
	}
	_, err = as.Open(ctx, store.ApprovalGate{StageID: deploy, RunID: r.ID, StageName: "deploy", Required: 1}, 0)
	wantErr(t, err, store.ErrConflict)
	_, err = as.Open(ctx, store.ApprovalGate{StageID: "no-such-stage", RunID: r.ID, StageName: "x", Required: 1}, 0)
	wantErr(t, err, store.ErrNotFound)
	_, err = as.Open(ctx, store.ApprovalGate{StageID: release, RunID: r.ID, StageName: "release"}, 0)
	wantErr(t, err, store.ErrInvalid)
	rel, err := as.Open(ctx, store.ApprovalGate{StageID: release, RunID: r.ID, StageName: "release", Required: 1}, 0)
	noErr(t, err)
	if rel.ExpiresAt != nil || rel.Approvers != nil {
		t.Fatalf("opened without a timeout or approvers: %s", dump(rel))
	}
	got, err := as.Get(ctx, deploy)
	noErr(t, err)
	equal(t, got, g)

	// Votes: one per user, in order, only on a pending gate.
	g, err = as.Vote(ctx, store.Vote{StageID: deploy, User: "alice", Decision: store.DecisionApproved, Comment: "lgtm"})
	noErr(t, err)
	_, err = as.Vote(ctx, store.Vote{StageID: deploy, User: "alice", Decision: store.DecisionRejected})
	wantErr(t, err, store.ErrConflict)
	g, err = as.Vote(ctx, store.Vote{StageID: deploy, User: "bob", Decision: store.DecisionApproved})
	noErr(t, err)
	if len(g.Votes) != 2 || g.Votes[0].User != "alice" || g.Votes[0].Comment != "lgtm" || g.Votes[1].User != "bob" ||
		g.Votes[1].StageID != deploy || g.Approvals() != 2 {
		t.Fatalf("after two votes %s", dump(g))
	}
	fresh(t, "vote CreatedAt", g.Votes[1].CreatedAt)
	for _, v := range []store.Vote{{StageID: deploy, Decision: store.DecisionApproved}, {StageID: deploy, User: "carol", Decision: "maybe"}} {
		_, err = as.Vote(ctx, v)
		wantErr(t, err, store.ErrInvalid)
	}
	_, err = as.Vote(ctx, store.Vote{StageID: announce, User: "alice", Decision: store.DecisionApproved})
	wantErr(t, err, store.ErrNotFound)

	// SetStatus closes a pending gate once; a closed gate takes no votes.
	closed, err := as.SetStatus(ctx, deploy, store.ApprovalApproved)
	noErr(t, err)
	if closed.Status != store.ApprovalApproved || closed.ClosedAt == nil || len(closed.Votes) != 2 {
		t.Fatalf("closed %s", dump(closed))
	}
	_, err = as.SetStatus(ctx, deploy, store.ApprovalRejected)
	wantErr(t, err, store.ErrConflict)
	_, err = as.SetStatus(ctx, announce, store.ApprovalRejected)
	wantErr(t, err, store.ErrNotFound)
	_, err = as.SetStatus(ctx, release, store.ApprovalPending)
	wantErr(t, err, store.ErrInvalid)
	_, err = as.Vote(ctx, store.Vote{StageID: deploy, User: "carol", Decision: store.DecisionApproved})
	wantErr(t, err, store.ErrConflict)

	list, err := as.List(ctx, r.ID)
	noErr(t, err)
	if len(list) != 2 || list[0].StageID != deploy || list[1].StageID != release {
		t.Fatalf("listed %s", dump(list))
	}
	equal(t, list[0], closed)

	// Events: the gate with its votes after each change.
	equal(t, eventTypes(t, st, deploy)[1:], []string{"approval_gate.pending", "approval_gate.vote", "approval_gate.vote", "approval_gate.approved"})
	var ev store.ApprovalGate
	lastPayload(t, st, deploy, "approval_gate.vote", &ev)
	if len(ev.Votes) != 2 || ev.Votes[1].User != "bob" || ev.Status != store.ApprovalPending {
		t.Fatalf("vote event %s", dump(ev))
	}

	testApprovalExpiry(t, st, r.ID, announce)
	approvalVoteRace(t, open, st, r.ID, release)
}

// testApprovalExpiry: Expired finds pending gates past their expiry whose
// stages wait, by the time it is given.
func testApprovalExpiry(t *testing.T, st store.Store, runID, stageID string) {
	ctx := context.Background()
	g, err := st.Approvals().Open(ctx, store.ApprovalGate{StageID: stageID, RunID: runID, StageName: "announce", Required: 1}, time.Hour)
	noErr(t, err)
	expired := func(at time.Time) []string {
		t.Helper()
		gs, err := st.Approvals().Expired(ctx, at)
		noErr(t, err)
		var ids []string
		for _, g := range gs {
			ids = append(ids, g.StageID)
		}
		return ids
	}
	equal(t, expired(g.ExpiresAt.Add(time.Second)), []string(nil)) // its stage does not wait
	_, err = st.Stages().SetStatus(ctx, stageID, store.StatusWaiting)
	noErr(t, err)
	equal(t, expired(g.ExpiresAt.Add(-time.Second)), []string(nil))
	equal(t, expired(*g.ExpiresAt), []string{stageID})
	_, err = st.Approvals().SetStatus(ctx, stageID, store.ApprovalExpired)
	noErr(t, err)
	equal(t, expired(g.ExpiresAt.Add(time.Hour)), []string(nil))
}

// approvalVoteRace: votes of many users on two servers at once all count,
// and a user's second vote is refused however it races.
func approvalVoteRace(t *testing.T, open OpenFunc, st store.Store, runID, stageID string) {
	ctx := context.Background()
	other := openStore(t, open)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			s := st
			if i%2 == 1 {
				s = other
			}
			user := []string{"u0", "u1", "u2", "u3", "u4"}[i%5]
			_, errs[i] = s.Approvals().Vote(ctx, store.Vote{StageID: stageID, User: user, Decision: store.DecisionApproved})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			wantErr(t, err, store.ErrConflict)
		}
	}
	g, err := st.Approvals().Get(ctx, stageID)
	noErr(t, err)
	if ok != 5 || len(g.Votes) != 5 || g.Approvals() != 5 {
		t.Fatalf("%d votes accepted, gate %s", ok, dump(g))
	}
}
