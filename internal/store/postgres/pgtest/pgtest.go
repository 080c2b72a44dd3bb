// Package pgtest gives tests a real PostgreSQL database of their own: the
// server named by OXIDE_TEST_POSTGRES (scripts/postgres.sh starts one and
// prints it), in a fresh schema dropped when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// DSN returns the DSN of a fresh, empty schema, dropped when t ends. It
// skips t, saying why, when OXIDE_TEST_POSTGRES is not set.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("OXIDE_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("OXIDE_TEST_POSTGRES is not set, so there is no PostgreSQL to test; export OXIDE_TEST_POSTGRES=$(scripts/postgres.sh)")
	}
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
	return WithParam(dsn, "search_path", name)
}

// WithParam returns dsn, a URL or a key=value string, with key set.
func WithParam(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(dsn) + " " + key + "=" + value
}
