package scheduler_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// TestLostAgent: a sweep finds an agent silent for the agent timeout lost,
// though its jobs' leases expired as long ago: they go back to the queue
// with agent_lost (or fail, on their last attempt), and the next attempt's
// log opens with why. The jobs of an in-process worker as silent are no
// agent's: their leases expire, and the worker is not lost.
func TestLostAgent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const silence = 200 * time.Millisecond
	svc := scheduler.New(scheduler.Config{Store: st, Lease: silence, AgentTimeout: silence})
	submit := func(name string, attempts int) store.Job {
		t.Helper()
		j, err := svc.SubmitJob(ctx, jobspec.Spec{Name: name, Command: "true", MaxAttempts: attempts, Labels: []string{name}}, "tester")
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	claim := func(worker, version string, labels ...string) {
		t.Helper()
		if _, err := svc.Register(ctx, store.Agent{ID: worker, Name: worker, Version: version}); err != nil {
			t.Fatal(err)
		}
		if as, err := svc.Claim(ctx, worker, labels, 2); err != nil || len(as) != len(labels) {
			t.Fatalf("claim by %s: %v, %d jobs", worker, err, len(as))
		}
	}
	retried, last := submit("retried", 2), submit("last", 1)
	claim("remote", "1.0", "retried", "last")

	eventually(t, "the agent's silence and the leases to outlast the timeout", func() bool {
		silent, err := st.Agents().Silent(ctx, silence)
		if err != nil || len(silent) != 1 {
			return false
		}
		for _, id := range []string{retried.ID, last.ID} {
			if j, err := st.Jobs().Get(ctx, id); err != nil || !j.LeaseUntil.Before(time.Now()) {
				return false
			}
		}
		return true
	})
	if err := svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}

	if a, err := st.Agents().Get(ctx, "remote"); err != nil || a.Status != store.AgentLost {
		t.Errorf("agent remote: %s %v, want lost", a.Status, err)
	}
	for _, want := range []store.Job{
		{ID: retried.ID, State: store.JobQueued, Error: scheduler.ReasonAgentLost},
		{ID: last.ID, State: store.JobFailed, Error: scheduler.ReasonAgentLost},
	} {
		if j, err := st.Jobs().Get(ctx, want.ID); err != nil || j.State != want.State || j.Error != want.Error {
			t.Errorf("job %s: %s %q %v, want %s %q", j.Name, j.State, j.Error, err, want.State, want.Error)
		}
	}
	evs, err := st.Outbox().Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	lost := map[string]int{}
	for _, e := range evs {
		if e.Type == "agent.lost" || e.Type == "agent.disconnected" {
			lost[e.Type+" "+e.AggregateID]++
		}
	}
	if len(lost) != 2 || lost["agent.lost remote"] != 1 || lost["agent.disconnected remote"] != 1 {
		t.Errorf("events %v, want agent.lost and agent.disconnected of remote only", lost)
	}

	// Attempt 2 opens with why attempt 1 ended, before its worker's lines.
	claim("next", "1.0", "retried")
	for id, want := range map[string]string{retried.ID: "attempt 2 of 2 after agent lost"} {
		lines, err := st.Logs().Read(ctx, id, 0, 0)
		if err != nil || len(lines) != 1 {
			t.Fatalf("log: %v %+v", err, lines)
		}
		if l := lines[0]; l.Seq != 2<<32 || l.Attempt != 2 || l.Stream != "system" || l.Text != want {
			t.Errorf("first line of attempt 2: %+v, want %q", l, want)
		}
	}
}

// eventually polls cond until it holds, for 10 s at most.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
