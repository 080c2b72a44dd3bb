package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

var errAuditDown = errors.New("the audit log is down")

// auditDown is a store whose audit log refuses entries in transactions.
type auditDown struct{ store.Store }

func (s auditDown) InTx(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.Store.InTx(ctx, func(tx store.Tx) error { return fn(downTx{tx}) })
}

type downTx struct{ store.Tx }

func (t downTx) Audit() store.Audit { return downAudit{t.Tx.Audit()} }

type downAudit struct{ store.Audit }

func (downAudit) Record(context.Context, store.AuditEntry) (store.AuditEntry, error) {
	return store.AuditEntry{}, errAuditDown
}

// TestTokensAudited (issue 11.7): a token is created or deleted together
// with its audit entry or not at all.
func TestTokensAudited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	up, down := tokens{st}, tokens{auditDown{st}}
	e := store.AuditEntry{Actor: "root", Action: "token.create", ResourceType: "token"}

	if _, err := down.CreateAudited(ctx, api.Token{Name: "ghost", Role: api.RoleAdmin, Hash: "h1"}, e); !errors.Is(err, errAuditDown) {
		t.Fatalf("create while the audit log is down: %v", err)
	}
	if all, _ := up.List(ctx); len(all) != 0 {
		t.Fatalf("a token was created without its audit entry: %+v", all)
	}
	tok, err := up.CreateAudited(ctx, api.Token{Name: "real", Role: api.RoleAdmin, Hash: "h2"}, e)
	if err != nil {
		t.Fatal(err)
	}
	e.Action, e.ResourceID = "token.delete", tok.ID
	if err := down.DeleteAudited(ctx, tok.ID, e); !errors.Is(err, errAuditDown) {
		t.Fatalf("delete while the audit log is down: %v", err)
	}
	if _, err := up.GetByHash(ctx, "h2"); err != nil {
		t.Fatalf("the token was deleted without its audit entry: %v", err)
	}
	if err := up.DeleteAudited(ctx, tok.ID, e); err != nil {
		t.Fatal(err)
	}
	entries, err := st.Audit().List(ctx, store.AuditFilter{ResourceID: tok.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Action != "token.delete" || entries[1].Action != "token.create" {
		t.Errorf("audit entries %+v, want the token's creation and deletion", entries)
	}
}
