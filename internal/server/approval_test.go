package server

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/testkit"
)

const approvalPipeline = `
version: "1"
name: gated
stages:
  - name: deploy
    approval: {required: true, approvers: [alice, bob], required_approvers: 2, timeout_hours: 24}
    steps: [{name: s, run: echo deployed}]
`

// approvalRun is what the test reads of a run with an approval gate.
type approvalRun struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Stages []struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Reason   string `json:"reason"`
		Approval *struct {
			ID                string   `json:"id"`
			Status            string   `json:"status"`
			RequiredApprovers int      `json:"required_approvers"`
			CurrentApprovals  int      `json:"current_approvals"`
			PendingApprovals  int      `json:"pending_approvals"`
			AllowedApprovers  []string `json:"allowed_approvers"`
			Approvers         []struct {
				UserID  string `json:"user_id"`
				Action  string `json:"action"`
				Comment string `json:"comment"`
				ActedAt string `json:"acted_at"`
			} `json:"approvers"`
			ExpiresAt string `json:"expires_at"`
		} `json:"approval"`
	} `json:"stages"`
}

// TestApprovalVotes drives approvals through the REST API of a real server:
// who may vote (403 otherwise), one vote each (409), two approvals needed,
// a rejection, the gate in the run's detail, and the approval.* events on
// JetStream with the spec's payloads.
func TestApprovalVotes(t *testing.T) {
	ctx := t.Context()
	emb, err := natsbus.StartEmbedded(ctx, t.TempDir(), natsbus.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	cfg := testConfig(t)
	cfg.NATSURL = emb.ClientURL()
	s := startServer(t, cfg)

	token := func(name string) string {
		var tok struct{ Token string }
		s.call(t, "POST", "/api/v1/tokens", s.Token, map[string]string{"name": name, "role": "developer"}).want(t, 201, &tok)
		return tok.Token
	}
	alice, bob, mallory := token("alice"), token("bob"), token("mallory")
	var p struct{ ID string }
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"definition": approvalPipeline}).want(t, 201, &p)
	waiting := func() approvalRun {
		var run approvalRun
		s.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", alice, nil).want(t, 201, &run)
		testkit.Until(t, 30*time.Second, func() (bool, string) {
			s.call(t, "GET", "/api/v1/runs/"+run.ID, s.Token, nil).want(t, 200, &run)
			return run.Status == "waiting", "run status " + run.Status
		})
		return run
	}
	vote := func(runID, verb, tok string, status int, v any) {
		t.Helper()
		s.call(t, "POST", "/api/v1/runs/"+runID+"/stages/deploy/"+verb, tok, map[string]string{"comment": "from " + verb}).want(t, status, v)
	}
	wantError := func(runID, verb, tok string, status int, code string) {
		t.Helper()
		var e apiError
		vote(runID, verb, tok, status, &e)
		if e.Error.Code != code || e.Error.Message == "" {
			t.Errorf("%s: error %+v, want code %s", verb, e.Error, code)
		}
	}

	run := waiting()
	if g := run.Stages[0].Approval; g == nil || g.Status != "pending" || g.RequiredApprovers != 2 || g.PendingApprovals != 2 ||
		len(g.AllowedApprovers) != 2 || g.ExpiresAt == "" || len(g.Approvers) != 0 {
		t.Fatalf("waiting stage %+v", run.Stages[0])
	}
	gateID := run.Stages[0].Approval.ID
	wantError(run.ID, "approve", mallory, 403, "forbidden")
	vote(run.ID, "approve", alice, 200, &run)
	if g := run.Stages[0].Approval; run.Status != "waiting" || g.CurrentApprovals != 1 || g.PendingApprovals != 1 ||
		len(g.Approvers) != 1 || g.Approvers[0].UserID != "alice" || g.Approvers[0].Action != "approved" || g.Approvers[0].Comment != "from approve" {
		t.Fatalf("after one approval: %s %+v", run.Status, g)
	}
	wantError(run.ID, "approve", alice, 409, "conflict")
	wantError(run.ID, "reject", alice, 409, "conflict")
	vote(run.ID, "approve", bob, 200, &run)
	testkit.Until(t, 30*time.Second, func() (bool, string) {
		s.call(t, "GET", "/api/v1/runs/"+run.ID, s.Token, nil).want(t, 200, &run)
		return run.Status == "success", "run status " + run.Status
	})
	if g := run.Stages[0].Approval; g.Status != "approved" || g.CurrentApprovals != 2 || g.PendingApprovals != 0 {
		t.Errorf("approved gate %+v", g)
	}

	rejected := waiting()
	vote(rejected.ID, "reject", bob, 200, &rejected)
	if st := rejected.Stages[0]; rejected.Status != "failure" || st.Status != "cancelled" || st.Reason != "rejected by bob: from reject" ||
		st.Approval.Status != "rejected" {
		t.Errorf("rejected run %s, stage %+v", rejected.Status, st)
	}
	wantError(rejected.ID, "approve", alice, 409, "conflict")

	// The events, as a consumer of the stream reads them.
	nc, err := nats.Connect(emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, natsbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	payload := func(subject string) map[string]any {
		t.Helper()
		var m *jetstream.RawStreamMsg
		testkit.Until(t, 10*time.Second, func() (bool, string) {
			m, err = stream.GetLastMsgForSubject(ctx, subject)
			return err == nil, subject + ": " + errString(err)
		})
		var v map[string]any
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		return v
	}
	v := payload(events.ApprovalRequestedSubject(gateID))
	if v["gate_id"] != gateID || v["run_id"] != run.ID || v["stage_name"] != "deploy" || v["pipeline_name"] != "gated" ||
		v["required_approvers"] != 2.0 || v["requested_at"] == nil || v["expires_at"] == nil || v["triggered_by"] != "alice" {
		t.Errorf("approval.requested %v", v)
	}
	v = payload(events.ApprovalGrantedSubject(gateID)) // the last one: bob's
	if v["approved_by"] != "bob" || v["current_approvals"] != 2.0 || v["required_approvals"] != 2.0 || v["fully_approved"] != true ||
		v["approved_at"] == nil || v["run_id"] != run.ID {
		t.Errorf("approval.granted %v", v)
	}
	v = payload(events.ApprovalRejectedSubject(rejected.Stages[0].ID))
	if v["rejected_by"] != "bob" || v["reason"] != "from reject" || v["rejected_at"] == nil || v["run_id"] != rejected.ID {
		t.Errorf("approval.rejected %v", v)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestApprovalExpiredEvent: an expired gate is published as
// approval.expired.{gate_id} with the approvals it still needed.
func TestApprovalExpiredEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Runs().Create(ctx, store.Run{PipelineID: p.ID})
	if err != nil {
		t.Fatal(err)
	}
	ss, err := st.Stages().Create(ctx, store.Stage{RunID: r.ID, Name: "deploy", Status: store.StatusWaiting})
	if err != nil {
		t.Fatal(err)
	}
	g := store.ApprovalGate{StageID: ss[0].ID, RunID: r.ID, StageName: "deploy", Required: 3}
	if _, err := st.Approvals().Open(ctx, g, 90*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Approvals().Vote(ctx, store.Vote{StageID: g.StageID, User: "alice", Decision: store.DecisionApproved}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Approvals().SetStatus(ctx, g.StageID, store.ApprovalExpired); err != nil {
		t.Fatal(err)
	}
	evs, err := st.Outbox().Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	subject, b := outbox{st}.publication(ctx, last)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if subject != events.ApprovalExpiredSubject(g.StageID) || v["gate_id"] != g.StageID || v["run_id"] != r.ID || v["pipeline_id"] != p.ID ||
		v["pending_approvals"] != 2.0 || v["timeout_minutes"] != 90.0 || v["expired_at"] == nil {
		t.Errorf("%s %v", subject, v)
	}
}
