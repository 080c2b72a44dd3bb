package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

func testWorkers(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	ws := st.Workers()

	deadline := time.Now().Add(5 * time.Minute).UTC().Truncate(time.Microsecond)
	a, err := ws.Create(ctx, store.Worker{Provider: "docker", TokenID: "token-1", Deadline: deadline})
	noErr(t, err)
	if a.ID == "" || a.State != store.WorkerProvisioning || a.Provider != "docker" || a.TokenID != "token-1" ||
		a.AgentID != "" || a.Handle != "" || a.Error != "" || !a.Deadline.Equal(deadline) || !a.UpdatedAt.Equal(a.CreatedAt) {
		t.Fatalf("created %+v", a)
	}
	fresh(t, "CreatedAt", a.CreatedAt)
	got, err := ws.Get(ctx, a.ID)
	noErr(t, err)
	equal(t, got, a)
	_, err = ws.Get(ctx, "no-such-worker")
	wantErr(t, err, store.ErrNotFound)

	// No deadline is fine; a provider and a known state are required.
	b, err := ws.Create(ctx, store.Worker{ID: "worker-b", Provider: "kubernetes"})
	noErr(t, err)
	if b.ID != "worker-b" || !b.Deadline.IsZero() {
		t.Fatalf("created %+v", b)
	}
	_, err = ws.Create(ctx, store.Worker{ID: "worker-b", Provider: "docker"})
	wantErr(t, err, store.ErrConflict)
	_, err = ws.Create(ctx, store.Worker{})
	wantErr(t, err, store.ErrInvalid)
	_, err = ws.Create(ctx, store.Worker{Provider: "docker", State: "bogus"})
	wantErr(t, err, store.ErrInvalid)
	c, err := ws.Create(ctx, store.Worker{Provider: "docker", State: store.WorkerReady, AgentID: "agent-c", Isolation: "user runner"})
	noErr(t, err)
	if got, err := ws.Get(ctx, c.ID); err != nil || got.Isolation != "user runner" || got.AgentID != "agent-c" {
		t.Fatalf("Get after Create: %+v, %v", got, err)
	}

	// List filters by provider and states, oldest first.
	list := func(provider string, states ...store.WorkerState) []string {
		t.Helper()
		l, err := ws.List(ctx, provider, states...)
		noErr(t, err)
		ids := []string{}
		for _, w := range l {
			ids = append(ids, w.ID)
		}
		return ids
	}
	equal(t, list(""), []string{a.ID, b.ID, c.ID})
	equal(t, list("docker"), []string{a.ID, c.ID})
	equal(t, list("", store.WorkerReady), []string{c.ID})
	equal(t, list("docker", store.WorkerProvisioning, store.WorkerReady), []string{a.ID, c.ID})
	equal(t, list("kubernetes", store.WorkerReady), []string{})
	equal(t, list("none"), []string{})

	// Other fields alone; then provisioning → ready → terminating → terminated.
	a1, err := ws.Update(ctx, a.ID, store.WorkerUpdate{Handle: "c0ffee"})
	noErr(t, err)
	if a1.State != store.WorkerProvisioning || a1.Handle != "c0ffee" || a1.TokenID != "token-1" || a1.UpdatedAt.Before(a.UpdatedAt) {
		t.Fatalf("updated %+v", a1)
	}
	fresh(t, "UpdatedAt", a1.UpdatedAt)
	a2, err := ws.Update(ctx, a.ID, store.WorkerUpdate{State: store.WorkerReady, AgentID: "agent-a"})
	noErr(t, err)
	if a2.State != store.WorkerReady || a2.AgentID != "agent-a" || a2.Handle != "c0ffee" || !a2.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("ready %+v", a2)
	}
	_, err = ws.Update(ctx, a.ID, store.WorkerUpdate{State: store.WorkerProvisioning})
	wantErr(t, err, store.ErrConflict)
	_, err = ws.Update(ctx, a.ID, store.WorkerUpdate{State: "bogus"})
	wantErr(t, err, store.ErrInvalid)
	_, err = ws.Update(ctx, "no-such-worker", store.WorkerUpdate{State: store.WorkerReady})
	wantErr(t, err, store.ErrNotFound)
	a3, err := ws.Update(ctx, a.ID, store.WorkerUpdate{State: store.WorkerTerminating, Error: "scaled down"})
	noErr(t, err)
	if a3.State != store.WorkerTerminating || a3.Error != "scaled down" || a3.AgentID != "agent-a" {
		t.Fatalf("terminating %+v", a3)
	}
	for _, back := range []store.WorkerState{store.WorkerReady, store.WorkerProvisioning} {
		_, err = ws.Update(ctx, a.ID, store.WorkerUpdate{State: back})
		wantErr(t, err, store.ErrConflict)
	}
	a4, err := ws.Update(ctx, a.ID, store.WorkerUpdate{State: store.WorkerTerminated})
	noErr(t, err)
	equal(t, a4.State, store.WorkerTerminated)

	// A worker that did not come up fails; final states take no change.
	b1, err := ws.Update(ctx, b.ID, store.WorkerUpdate{State: store.WorkerFailed, Error: "agent did not register"})
	noErr(t, err)
	equal(t, b1.State, store.WorkerFailed)
	for _, id := range []string{a.ID, b.ID} {
		for _, u := range []store.WorkerUpdate{{Handle: "x"}, {State: store.WorkerFailed}, {State: store.WorkerTerminated}} {
			_, err = ws.Update(ctx, id, u)
			wantErr(t, err, store.ErrConflict)
		}
	}
	got, err = ws.Get(ctx, a.ID)
	noErr(t, err)
	equal(t, got, a4)

	// Inside a transaction, and rolled back with it.
	rollback := errors.New("roll back")
	err = st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Workers().Update(ctx, c.ID, store.WorkerUpdate{State: store.WorkerTerminating}); err != nil {
			return err
		}
		if _, err := tx.Workers().Create(ctx, store.Worker{ID: "worker-d", Provider: "docker"}); err != nil {
			return err
		}
		return rollback
	})
	wantErr(t, err, rollback)
	equal(t, list("docker", store.WorkerReady), []string{c.ID})
	_, err = ws.Get(ctx, "worker-d")
	wantErr(t, err, store.ErrNotFound)

	// Events: the state after Create, worker.<state> on a change of state,
	// worker.updated otherwise; refused updates are none.
	equal(t, eventTypes(t, st, a.ID), []string{"worker.provisioning", "worker.updated", "worker.ready", "worker.terminating", "worker.terminated"})
	equal(t, eventTypes(t, st, b.ID), []string{"worker.provisioning", "worker.failed"})
	equal(t, eventTypes(t, st, c.ID), []string{"worker.ready"})
	var payload store.Worker
	lastPayload(t, st, a.ID, "worker.terminated", &payload)
	equal(t, payload, a4)
}
