package datadir_test

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oxide-ci/oxide/internal/datadir"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestSecure: a directory and files open to others are made private and
// the change logged; subdirectories and private files are left alone.
func TestSecure(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(filepath.Join(dir, "workspaces"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]fs.FileMode{"oxide.db": 0o644, "oxide.db-wal": 0o666, "secret.key": 0o600, "owner-only": 0o400} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, m); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, name), m); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if err := datadir.Secure(dir, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{
		dir: 0o700, "oxide.db": 0o600, "oxide.db-wal": 0o600, "secret.key": 0o600, "owner-only": 0o400, "workspaces": 0o755,
	} {
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		if got := mode(t, path); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
	}
	if n := strings.Count(logs.String(), "mode tightened"); n != 3 {
		t.Errorf("%d changes logged, want 3 (the directory, oxide.db and its WAL):\n%s", n, logs.String())
	}

	// A new directory is made private.
	fresh := filepath.Join(dir, "fresh")
	if err := datadir.Secure(fresh, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, fresh); got != 0o700 {
		t.Errorf("new directory: mode %04o, want 0700", got)
	}
}
