package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

type bootstrapTokens struct{ *conn }

const bootstrapCols = `id, hash, labels, created_by, created_at, expires_at, used_at, used_by`

func scanBootstrap(r pgx.Row) (store.BootstrapToken, error) {
	var t store.BootstrapToken
	err := r.Scan(&t.ID, &t.Hash, &t.Labels, &t.CreatedBy, &t.CreatedAt, &t.ExpiresAt, &t.UsedAt, &t.UsedBy)
	t.Labels = nilIfEmpty(t.Labels)
	return t, err
}

func (t bootstrapTokens) Create(ctx context.Context, tok store.BootstrapToken, ttl time.Duration) (store.BootstrapToken, error) {
	if tok.Hash == "" || ttl <= 0 {
		return tok, fmt.Errorf("%w: a bootstrap token needs a hash and a positive ttl", store.ErrInvalid)
	}
	if tok.ID == "" {
		tok.ID = store.NewID()
	}
	var out store.BootstrapToken
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanBootstrap(q.QueryRow(ctx, `INSERT INTO bootstrap_tokens (id, hash, labels, created_by, created_at, expires_at)
			VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 microsecond') RETURNING `+bootstrapCols,
			tok.ID, tok.Hash, nonNil(tok.Labels), tok.CreatedBy, ttl.Microseconds()))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "bootstrap_token", out.ID, "created", out)
	})
	return out, err
}

// Spend's UPDATE locks the row: a concurrent Spend waits for it, then finds
// used_at set and changes nothing.
func (t bootstrapTokens) Spend(ctx context.Context, hash, agentID string) (store.BootstrapToken, error) {
	var out store.BootstrapToken
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanBootstrap(q.QueryRow(ctx, `UPDATE bootstrap_tokens SET used_at = now(), used_by = $2
			WHERE hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING `+bootstrapCols, hash, agentID))
		if errors.Is(err, pgx.ErrNoRows) {
			// Spent or expired (the token as stored, to say which), or unknown.
			out, err = scanBootstrap(q.QueryRow(ctx, `SELECT `+bootstrapCols+` FROM bootstrap_tokens WHERE hash = $1`, hash))
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: bootstrap token %s is spent or expired", store.ErrConflict, out.ID)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "bootstrap_token", out.ID, "spent", out)
	})
	return out, err
}

func (t bootstrapTokens) Get(ctx context.Context, id string) (tok store.BootstrapToken, err error) {
	err = t.read(ctx, func(q querier) error {
		tok, err = scanBootstrap(q.QueryRow(ctx, `SELECT `+bootstrapCols+` FROM bootstrap_tokens WHERE id = $1`, id))
		return err
	})
	return tok, err
}

func (t bootstrapTokens) List(ctx context.Context) (toks []store.BootstrapToken, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+bootstrapCols+` FROM bootstrap_tokens ORDER BY created_at DESC, id`)
		toks, err = all(rows, err, scanBootstrap)
		return err
	})
	return toks, err
}
