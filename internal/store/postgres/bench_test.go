package postgres_test

import (
	"context"
	"testing"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/postgres/pgtest"
	"github.com/oxide-ci/oxide/internal/store/storetest"
)

// BenchmarkLogs, on the PostgreSQL that OXIDE_TEST_POSTGRES names:
//
//	OXIDE_TEST_POSTGRES=$(scripts/postgres.sh) go test ./internal/store/postgres -run '^$' -bench Logs -benchtime 3x
func BenchmarkLogs(b *testing.B) {
	storetest.BenchLogs(b, func(b *testing.B) store.Store {
		st, err := postgres.Open(context.Background(), pgtest.DSN(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	})
}
