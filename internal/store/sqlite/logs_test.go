package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// TestLogChunksMigration: migration 0004 moves the lines of step_logs, one row
// each, into chunks that Read and Append take up.
func TestLogChunksMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "oxide.db")
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(query string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, query, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`)
	for v, name := range []string{"0001_init.sql", "0002_tokens.sql", "0003_bootstrap_tokens.sql"} {
		b, err := os.ReadFile(filepath.Join("migrations", name))
		if err != nil {
			t.Fatal(err)
		}
		exec(string(b))
		exec(`INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01T00:00:00.000000Z')`, v+1, name)
	}
	exec(`INSERT INTO jobs (id, name, state, max_attempts, created_at) VALUES ('j1', 'j1', 'running', 1, '2026-01-01T00:00:00.000000Z'),
		('j2', 'j2', 'running', 1, '2026-01-01T00:00:00.000000Z')`)
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456000, time.UTC)
	var want []store.LogLine
	for seq := int64(300); seq >= 1; seq-- { // in reverse: the chunks are by seq all the same
		if seq == 150 {
			continue // a gap
		}
		l := store.LogLine{Seq: seq, StepID: "build", Stream: "stdout", Text: "line\t\"ü\"\n", Time: at.Add(time.Duration(seq) * time.Second)}
		if seq%3 == 0 {
			l.StepID, l.Stream = "", "stderr"
		}
		want = append([]store.LogLine{l}, want...)
		exec(`INSERT INTO step_logs (job_id, seq, step_id, stream, content, logged_at) VALUES ('j1', ?, nullif(?, ''), ?, ?, ?)`,
			l.Seq, l.StepID, l.Stream, l.Text, l.Time.Format("2006-01-02T15:04:05.000000Z"))
	}
	exec(`INSERT INTO step_logs (job_id, seq, step_id, stream, content, logged_at) VALUES ('j2', 1, NULL, 'system', 'other job', '2026-01-01T00:00:00.000000Z')`)
	db.Close()

	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Logs().Read(ctx, "j1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after the migration, Read = %d lines %+v…, want %d %+v…", len(got), got[:min(2, len(got))], len(want), want[:2])
	}
	got, err = st.Logs().Read(ctx, "j1", 140, 20)
	if err != nil || len(got) != 20 || got[0].Seq != 141 || got[9].Seq != 151 {
		t.Fatalf("Read(after 140, 20) = %+v, %v", got, err)
	}
	// Appends go on: resent lines are dropped, the gap is filled.
	n, err := st.Logs().Append(ctx, "j1", []store.LogLine{{Seq: 149, Text: "dup"}, {Seq: 150, Text: "new"}, {Seq: 301, Text: "new"}})
	if err != nil || n != 2 {
		t.Fatalf("Append = %d, %v; want 2", n, err)
	}
	got, err = st.Logs().Read(ctx, "j1", 148, 3)
	if err != nil || len(got) != 3 || got[0].Text != want[147].Text || got[1].Text != "new" || got[2].Seq != 151 {
		t.Fatalf("Read(after 148, 3) = %+v, %v", got, err)
	}
	got, err = st.Logs().Read(ctx, "j2", 0, 0)
	if err != nil || len(got) != 1 || got[0].Text != "other job" || got[0].StepID != "" {
		t.Fatalf("Read(j2) = %+v, %v", got, err)
	}
}
