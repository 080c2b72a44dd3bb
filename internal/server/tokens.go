package server

import (
	"context"
	"time"

	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/store"
)

// tokens adapts the store's API tokens to the API's TokenStore. Errors pass
// through unchanged: they wrap the store's sentinels, which the API maps.
type tokens struct {
	store store.Store
}

var _ api.AuditedTokenStore = tokens{}

func (t tokens) Create(ctx context.Context, tok api.Token) (api.Token, error) {
	out, err := t.store.Tokens().Create(ctx, toStoreToken(tok))
	if err != nil {
		return api.Token{}, err
	}
	return fromStoreToken(out), nil
}

func (t tokens) CreateAudited(ctx context.Context, tok api.Token, e store.AuditEntry) (out api.Token, err error) {
	err = t.store.InTx(ctx, func(tx store.Tx) error {
		st, err := tx.Tokens().Create(ctx, toStoreToken(tok))
		if err != nil {
			return err
		}
		out = fromStoreToken(st)
		e.ResourceID = st.ID
		_, err = tx.Audit().Record(ctx, e)
		return err
	})
	if err != nil {
		return api.Token{}, err
	}
	return out, nil
}

func (t tokens) DeleteAudited(ctx context.Context, id string, e store.AuditEntry) error {
	return t.store.InTx(ctx, func(tx store.Tx) error {
		if err := tx.Tokens().Delete(ctx, id); err != nil {
			return err
		}
		_, err := tx.Audit().Record(ctx, e)
		return err
	})
}

func (t tokens) GetByHash(ctx context.Context, hash string) (api.Token, error) {
	out, err := t.store.Tokens().GetByHash(ctx, hash)
	if err != nil {
		return api.Token{}, err
	}
	return fromStoreToken(out), nil
}

func (t tokens) List(ctx context.Context) ([]api.Token, error) {
	all, err := t.store.Tokens().List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Token, len(all))
	for i, tok := range all {
		out[i] = fromStoreToken(tok)
	}
	return out, nil
}

func (t tokens) Delete(ctx context.Context, id string) error {
	return t.store.Tokens().Delete(ctx, id)
}

func (t tokens) Touch(ctx context.Context, id string, at time.Time) error {
	return t.store.Tokens().Touch(ctx, id, at)
}

func toStoreToken(t api.Token) store.APIToken {
	return store.APIToken{ID: t.ID, Name: t.Name, Role: string(t.Role), Hash: t.Hash, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt}
}

func fromStoreToken(t store.APIToken) api.Token {
	return api.Token{ID: t.ID, Name: t.Name, Role: api.Role(t.Role), Hash: t.Hash, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt}
}
