package server

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// TestRecoverLeases checks what a restart does with the jobs that agents
// held when the server died: their leases are renewed for them to report.
func TestRecoverLeases(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Agents().Register(ctx, store.Agent{ID: "remote", Name: "remote", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Jobs().Enqueue(ctx, store.Job{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	remote, err := st.Jobs().Claim(ctx, "remote", nil, 1, time.Second)
	if err != nil || len(remote) != 1 {
		t.Fatal(err, remote)
	}
	if err := recoverLeases(ctx, st, time.Hour); err != nil {
		t.Fatal(err)
	}
	j, _ := st.Jobs().Get(ctx, remote[0].ID)
	if j.State != store.JobAssigned || j.LeaseUntil == nil || time.Until(*j.LeaseUntil) < 30*time.Minute {
		t.Errorf("the remote agent's job: %s, lease until %v; want its lease renewed for an hour", j.State, j.LeaseUntil)
	}
}
