package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataDirMadePrivate (issue 11.9): a data directory left 0777 with a
// 0644 database is made 0700, with every file in it (the database, its
// WAL and shared memory, the keys) 0600, and the server says so.
func TestDataDirMadePrivate(t *testing.T) {
	cfg := testConfig(t)
	db := filepath.Join(cfg.DataDir, "oxide.db")
	if err := os.WriteFile(db, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, m := range map[string]os.FileMode{db: 0o644, cfg.DataDir: 0o777} {
		if err := os.Chmod(path, m); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	s := startServer(t, cfg)
	s.call(t, "GET", "/api/v1/pipelines", s.Token, nil).want(t, 200, nil)

	fi, err := os.Stat(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("data directory mode %04o, want 0700", m)
	}
	entries, err := os.ReadDir(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		files = append(files, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", e.Name(), m)
		}
	}
	for _, want := range []string{"oxide.db", "oxide.db-wal", "oxide.db-shm", "secret.key", "ca-key.pem"} {
		if !strings.Contains(" "+strings.Join(files, " ")+" ", " "+want+" ") {
			t.Errorf("no %s among %q", want, files)
		}
	}
	if logs := s.logs.String(); !strings.Contains(logs, "mode tightened") || !strings.Contains(logs, "oxide.db") {
		t.Errorf("the server did not say it tightened the modes:\n%s", logs)
	}
}
