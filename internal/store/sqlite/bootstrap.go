package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type bootstrapTokens struct{ *conn }

const bootstrapCols = `id, hash, labels, created_by, created_at, expires_at, used_at, used_by`

func scanBootstrap(r scanner) (store.BootstrapToken, error) {
	var t store.BootstrapToken
	err := r.Scan(&t.ID, &t.Hash, jsonCol{&t.Labels}, &t.CreatedBy, timeCol{&t.CreatedAt}, timeCol{&t.ExpiresAt},
		nullTimeCol{&t.UsedAt}, &t.UsedBy)
	if len(t.Labels) == 0 {
		t.Labels = nil
	}
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
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanBootstrap(q.QueryRowContext(ctx, `INSERT INTO bootstrap_tokens (id, hash, labels, created_by, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING `+bootstrapCols,
			tok.ID, tok.Hash, labelsArg(tok.Labels), tok.CreatedBy, ts(now), ts(now.Add(ttl))))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "bootstrap_token", out.ID, "created", out)
	})
	return out, err
}

func (t bootstrapTokens) Spend(ctx context.Context, hash, agentID string) (store.BootstrapToken, error) {
	var out store.BootstrapToken
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanBootstrap(q.QueryRowContext(ctx, `UPDATE bootstrap_tokens SET used_at = ?, used_by = ?
			WHERE hash = ? AND used_at IS NULL AND expires_at > ? RETURNING `+bootstrapCols, ts(now), agentID, hash, ts(now)))
		if errors.Is(err, sql.ErrNoRows) {
			// Spent or expired (the token as stored, to say which), or unknown.
			out, err = scanBootstrap(q.QueryRowContext(ctx, `SELECT `+bootstrapCols+` FROM bootstrap_tokens WHERE hash = ?`, hash))
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: bootstrap token %s is spent or expired", store.ErrConflict, out.ID)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "bootstrap_token", out.ID, "spent", out)
	})
	return out, err
}

func (t bootstrapTokens) Get(ctx context.Context, id string) (tok store.BootstrapToken, err error) {
	err = t.read(func(q querier) error {
		tok, err = scanBootstrap(q.QueryRowContext(ctx, `SELECT `+bootstrapCols+` FROM bootstrap_tokens WHERE id = ?`, id))
		return err
	})
	return tok, err
}

func (t bootstrapTokens) List(ctx context.Context) (toks []store.BootstrapToken, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+bootstrapCols+` FROM bootstrap_tokens ORDER BY created_at DESC, id`)
		toks, err = all(rows, err, scanBootstrap)
		return err
	})
	return toks, err
}
