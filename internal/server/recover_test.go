package server

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// TestRecoverLeases checks what a restart does with the jobs that workers
// held when the server died: an in-process worker's job goes back to the
// queue, a remote agent's lease is renewed for it to report.
func TestRecoverLeases(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := scheduler.New(scheduler.Config{Store: st})
	for _, a := range []store.Agent{{ID: "local", Name: "local", Version: scheduler.InProcess}, {ID: "remote", Name: "remote", Version: "1.0"}} {
		if _, err := st.Agents().Register(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Jobs().Enqueue(ctx, store.Job{Name: "a"}, store.Job{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	local, err := st.Jobs().Claim(ctx, "local", nil, 1, time.Second)
	if err != nil || len(local) != 1 {
		t.Fatal(err, local)
	}
	remote, err := st.Jobs().Claim(ctx, "remote", nil, 1, time.Second)
	if err != nil || len(remote) != 1 {
		t.Fatal(err, remote)
	}
	if err := recoverLeases(ctx, st, svc, time.Hour); err != nil {
		t.Fatal(err)
	}
	if j, _ := st.Jobs().Get(ctx, local[0].ID); j.State != store.JobQueued {
		t.Errorf("the in-process worker's job is %s, want queued again", j.State)
	}
	j, _ := st.Jobs().Get(ctx, remote[0].ID)
	if j.State != store.JobAssigned || j.LeaseUntil == nil || time.Until(*j.LeaseUntil) < 30*time.Minute {
		t.Errorf("the remote agent's job: %s, lease until %v; want its lease renewed for an hour", j.State, j.LeaseUntil)
	}
}
