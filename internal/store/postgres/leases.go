package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type leases struct{ *conn }

// Acquire's upsert changes a row only if it is expired or holder's: one row
// changed means holder has the lease. Concurrent upserts of one name wait
// for each other, then see the row the winner wrote.
func (t leases) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (ok bool, err error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: a lease needs a name, a holder and a positive ttl", store.ErrInvalid)
	}
	err = t.write(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leases.holder = excluded.holder OR leases.expires_at <= now()`,
			name, holder, ttl.Seconds())
		ok = tag.RowsAffected() == 1
		return err
	})
	return ok, err
}

func (t leases) Release(ctx context.Context, name, holder string) error {
	return t.write(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder)
		return err
	})
}
