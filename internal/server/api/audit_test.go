package api_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/oxide-ci/oxide/internal/store"
)

// auditDown is a store whose audit log refuses entries while down is set.
type auditDown struct {
	store.Store
	down *atomic.Bool
}

func (s auditDown) Audit() store.Audit { return downAudit{s.Store.Audit(), s.down} }

func (s auditDown) InTx(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.Store.InTx(ctx, func(tx store.Tx) error { return fn(downTx{tx, s.down}) })
}

type downTx struct {
	store.Tx
	down *atomic.Bool
}

func (t downTx) Audit() store.Audit { return downAudit{t.Tx.Audit(), t.down} }

type downAudit struct {
	store.Audit
	down *atomic.Bool
}

func (a downAudit) Record(ctx context.Context, e store.AuditEntry) (store.AuditEntry, error) {
	if a.down.Load() {
		return store.AuditEntry{}, errors.New("the audit log is down")
	}
	return a.Audit.Record(ctx, e)
}

// TestChangesNeedTheirAuditEntry (issue 11.7): the API's own changes
// (pipelines, secrets) are written with their audit entry in one
// transaction: while the audit log refuses entries, each fails and
// changes nothing. (Runs, jobs and agents are the scheduler's:
// scheduler.TestAuditInTheChangesTransaction; tokens the server's:
// server.TestTokensAudited.)
func TestChangesNeedTheirAuditEntry(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	b := setupWith(t, options{wrap: func(st store.Store) store.Store { return auditDown{st, &down} }})
	ctx := context.Background()
	id := b.createPipeline(t, "kept")
	b.do(t, "PUT", "/api/v1/secrets/KEPT", b.developer, map[string]string{"value": "v1"}).want(t, 200)
	before := len(b.auditEntries(t))

	down.Store(true)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/pipelines", map[string]string{"name": "ghost", "definition": validPipeline}},
		{"PUT", "/api/v1/pipelines/" + id, map[string]string{"repository": "https://example.com/ghost.git"}},
		{"DELETE", "/api/v1/pipelines/" + id, nil},
		{"PUT", "/api/v1/secrets/GHOST", map[string]string{"value": "v2"}},
		{"DELETE", "/api/v1/secrets/KEPT", nil},
	} {
		if r := b.do(t, c.method, c.path, b.developer, c.body); r.status != 500 {
			t.Errorf("%s %s while the audit log is down: %d %s, want 500", c.method, c.path, r.status, r.body)
		}
	}
	down.Store(false)

	if _, err := b.store.Pipelines().GetByName(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pipeline created without its audit entry: %v", err)
	}
	if p, err := b.store.Pipelines().Get(ctx, id); err != nil || p.Repository != "" {
		t.Errorf("pipeline updated or deleted without its audit entry: %+v, %v", p, err)
	}
	if _, err := b.store.Secrets().Get(ctx, store.SecretKey{Scope: store.ScopeOrganization, Name: "GHOST"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("secret set without its audit entry: %v", err)
	}
	if _, err := b.store.Secrets().Get(ctx, store.SecretKey{Scope: store.ScopeOrganization, Name: "KEPT"}); err != nil {
		t.Errorf("secret deleted without its audit entry: %v", err)
	}
	if n := len(b.auditEntries(t)); n != before {
		t.Errorf("%d audit entries, want %d", n, before)
	}
}
