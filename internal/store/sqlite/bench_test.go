package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/store/storetest"
)

// BenchmarkLogs: go test ./internal/store/sqlite -run '^$' -bench Logs -benchtime 3x
func BenchmarkLogs(b *testing.B) {
	storetest.BenchLogs(b, func(b *testing.B) store.Store {
		st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "oxide.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	})
}
