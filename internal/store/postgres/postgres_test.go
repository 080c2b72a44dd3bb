package postgres_test

import (
	"context"
	"testing"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/store/storetest"
)

// TestConformance runs the suite against a real PostgreSQL, named by
// OXIDE_TEST_POSTGRES (scripts/postgres.sh starts one and prints it). Each
// test gets a schema of its own, dropped afterwards.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.OpenFunc {
		schemaDSN := pgtest.DSN(t)
		return func(t *testing.T) (store.Store, error) {
			st, err := postgres.Open(context.Background(), schemaDSN)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { st.Close() })
			return st, nil
		}
	})
}

func TestPoolSize(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	if _, err := postgres.Open(ctx, pgtest.WithParam(dsn, "pool_max_conns", "none")); err == nil {
		t.Fatal("Open accepted pool_max_conns=none")
	}
	st, err := postgres.Open(ctx, pgtest.WithParam(dsn, "pool_max_conns", "1"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// One connection serves one caller at a time, from a transaction too.
	err = st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.Jobs().Enqueue(ctx, store.Job{Name: "j"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := st.Jobs().Count(ctx, store.JobQueued); err != nil || n != 1 {
		t.Fatalf("Count = %d, %v; want 1", n, err)
	}
}
