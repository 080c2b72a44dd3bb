package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type leases struct{ *conn }

// Acquire's upsert changes a row only if it is expired or holder's: one row
// changed means holder has the lease.
func (t leases) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (ok bool, err error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: a lease needs a name, a holder and a positive ttl", store.ErrInvalid)
	}
	err = t.write(ctx, func(q querier, now time.Time) error {
		res, err := q.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4`,
			name, holder, ts(now.Add(ttl)), ts(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
}

func (t leases) Release(ctx context.Context, name, holder string) error {
	return t.write(ctx, func(q querier, _ time.Time) error {
		_, err := q.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder)
		return err
	})
}
