package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/storetest"
)

// TestConformance runs the suite against a real PostgreSQL, named by
// OXIDE_TEST_POSTGRES (scripts/postgres.sh starts one and prints it). Each
// test gets a schema of its own, dropped afterwards.
func TestConformance(t *testing.T) {
	dsn := testDSN(t)
	storetest.Run(t, func(t *testing.T) storetest.OpenFunc {
		schemaDSN := freshSchema(t, dsn)
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

// testDSN returns $OXIDE_TEST_POSTGRES, or skips the test without it.
func testDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("OXIDE_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("OXIDE_TEST_POSTGRES is not set, so there is no PostgreSQL to test; export OXIDE_TEST_POSTGRES=$(scripts/postgres.sh)")
	}
	return dsn
}

// freshSchema creates an empty schema, dropped when t ends, and returns dsn
// with it as the search_path.
func freshSchema(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `CREATE SCHEMA `+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA `+name+` CASCADE`); err != nil {
			t.Error(err)
		}
	})
	return withParam(dsn, "search_path", name)
}

// withParam returns dsn, a URL or a key=value string, with key set.
func withParam(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(dsn) + " " + key + "=" + value
}

func TestPoolSize(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t, testDSN(t))
	if _, err := postgres.Open(ctx, withParam(dsn, "pool_max_conns", "none")); err == nil {
		t.Fatal("Open accepted pool_max_conns=none")
	}
	st, err := postgres.Open(ctx, withParam(dsn, "pool_max_conns", "1"))
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
