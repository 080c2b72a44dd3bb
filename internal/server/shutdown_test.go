package server

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/testkit"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

const sleepyPipeline = `version: "1"
name: sleepy
stages:
  - name: nap
    steps:
      - name: sleep
        run: echo napping; sleep 1; echo woke
`

// TestGracefulShutdown cancels Run's context while a step sleeps: the own
// agent lets the job end within its grace and reports it, Run returns nil
// promptly, and the data directory opens again, both as a database and as
// a server.
func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig(t)
	s := startServer(t, cfg)

	var p struct{ ID string }
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"name": "sleepy", "definition": sleepyPipeline}).want(t, 201, &p)
	var run runJSON
	s.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", s.Token, map[string]any{}).want(t, 201, &run)
	id := run.ID
	testkit.Until(t, 30*time.Second, func() (bool, string) {
		var logs struct{ Lines []struct{ Text string } }
		s.call(t, "GET", "/api/v1/runs/"+id+"/logs", s.Token, nil).want(t, 200, &logs)
		return len(logs.Lines) > 0 && logs.Lines[0].Text == "napping", "no line \"napping\" yet"
	})

	began := time.Now()
	if err := s.stop(15 * time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(began)
	t.Logf("Run returned %s after the cancel", took.Round(time.Millisecond))

	// The database opens cleanly; the run and its job are in a state that
	// a restarted server can resume or has nothing left to do for.
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "oxide.db"))
	if err != nil {
		t.Fatalf("reopen the database: %v", err)
	}
	r, err := st.Runs().Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := st.Jobs().List(ctx, store.JobFilter{RunID: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 {
		t.Fatalf("%d jobs for the run, want 1", len(jobs))
	}
	j := jobs[0]
	t.Logf("after shutdown: run %s, job %s (attempt %d of %d)", r.Status, j.State, j.Attempt, j.MaxAttempts)
	if !r.Status.Done() && (j.State == store.JobAssigned || j.State == store.JobRunning) && j.LeaseUntil == nil {
		t.Errorf("run %s with job %s and no lease: nothing will ever requeue it", r.Status, j.State)
	}
	pending, err := st.Outbox().Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The job ended within the agent's grace, and the server took its
	// report before it stopped.
	if r.Status != store.RunSuccess || j.State != store.JobSucceeded || j.Attempt != 1 {
		t.Errorf("after shutdown: run %s, job %s attempt %d; want both done with success", r.Status, j.State, j.Attempt)
	}

	// Run publishes what the outbox holds before it returns.
	if len(pending) > 0 {
		t.Errorf("%d events left unpublished after shutdown", len(pending))
	}

	// The server starts again on the same data directory, its own agent
	// with the identity it had.
	s2 := s.restart(t)
	s2.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", s2.Token, map[string]any{}).want(t, 201, &run)
	testkit.Until(t, 30*time.Second, func() (bool, string) {
		s2.call(t, "GET", "/api/v1/runs/"+run.ID, s2.Token, nil).want(t, 200, &run)
		return run.Status == string(store.RunSuccess), "run status " + run.Status
	})
	var agents struct{ Items []struct{ ID string } }
	s2.call(t, "GET", "/api/v1/agents", s2.Token, nil).want(t, 200, &agents)
	if len(agents.Items) != 1 {
		t.Errorf("agents after the restart: %+v, want the one own agent", agents.Items)
	}
}
