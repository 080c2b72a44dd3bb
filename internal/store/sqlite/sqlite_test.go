package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/store/storetest"
)

// TestConformance runs the suite on a database file per test; a second
// Store on the same file stands for a second server process.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.OpenFunc {
		path := filepath.Join(t.TempDir(), "oxide.db")
		return func(t *testing.T) (store.Store, error) {
			st, err := sqlite.Open(context.Background(), path)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { st.Close() })
			return st, nil
		}
	})
}
