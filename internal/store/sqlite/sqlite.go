// Package sqlite implements the store on SQLite (modernc.org/sqlite: pure
// Go, no cgo), the server's embedded default.
//
// The database runs in WAL mode with two pools: one connection for every
// write transaction, which serializes writers (claims included) inside the
// process, and a pool of read-only connections that read concurrently.
// Write transactions begin IMMEDIATE and wait up to busy_timeout for the
// lock, so several processes may share one file too, serialized by SQLite.
// Timestamps come from the process's clock.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/internal/schema"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a SQLite database. It implements store.Store.
type Store struct {
	w *sql.DB // one connection: all writes
	r *sql.DB // read-only connections
	// Their prepared statements.
	ws, rs *stmtCache
	conn
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it if needed) the database file at path and migrates
// its schema.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite: bad database path %q", path)
	}
	const common = "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
	// The writer: WAL, fsync at checkpoints only (a power cut may lose the
	// last commits, never consistency), a 32 MB page cache, and a checkpoint
	// every 64 MB of WAL rather than 4 MB; the last two nearly double the
	// queue's throughput (bench/queue).
	w, err := sql.Open("sqlite", path+"?"+common+"&_txlock=immediate&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"+
		"&_pragma=cache_size(-32768)&_pragma=wal_autocheckpoint(16000)")
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	s := &Store{w: w}
	s.conn = conn{s: s}
	if err := s.migrateRetrying(ctx); err != nil {
		w.Close()
		return nil, err
	}
	if s.r, err = sql.Open("sqlite", path+"?"+common+"&_pragma=query_only(1)"); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	s.r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.ws, s.rs = newStmtCache(s.w), newStmtCache(s.r)
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.ws.close()
	s.rs.close()
	return errors.Join(s.r.Close(), s.w.Close())
}

// InTx implements store.Store.
func (s *Store) InTx(ctx context.Context, fn func(store.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	defer s.ws.prepareWanted(context.WithoutCancel(ctx))
	if err := fn(&conn{s: s, tx: tx}); err != nil {
		_ = tx.Rollback()
		return err
	}
	return mapErr(tx.Commit())
}

// migrateRetrying migrates, retrying while the database is busy: processes
// that open a new database together can find it locked, with no wait, while
// one of them switches it to WAL.
func (s *Store) migrateRetrying(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.migrate(ctx)
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// migrate applies, in one transaction, the migrations that the
// schema_migrations table does not list.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := schema.Load(migrations, "migrations")
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	for _, m := range ms {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.Version).Scan(&n); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		if n > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, ts(now())); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
		}
	}
	return tx.Commit()
}

// querier is what statements run on: a pool or a transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// conn implements store.Tx: on the Store's pools when tx is nil, else inside
// tx.
type conn struct {
	s  *Store
	tx *sql.Tx
}

func (c *conn) Pipelines() store.Pipelines             { return pipelines{c} }
func (c *conn) Runs() store.Runs                       { return runs{c} }
func (c *conn) Stages() store.Stages                   { return stages{c} }
func (c *conn) Jobs() store.Jobs                       { return jobs{c} }
func (c *conn) Steps() store.Steps                     { return steps{c} }
func (c *conn) Logs() store.Logs                       { return logs{c} }
func (c *conn) Agents() store.Agents                   { return agents{c} }
func (c *conn) Secrets() store.Secrets                 { return secrets{c} }
func (c *conn) Cache() store.Cache                     { return cache{c} }
func (c *conn) Audit() store.Audit                     { return audit{c} }
func (c *conn) Templates() store.Templates             { return templates{c} }
func (c *conn) Tokens() store.Tokens                   { return tokens{c} }
func (c *conn) BootstrapTokens() store.BootstrapTokens { return bootstrapTokens{c} }
func (c *conn) Workers() store.Workers                 { return workers{c} }
func (c *conn) Leases() store.Leases                   { return leases{c} }
func (c *conn) Approvals() store.Approvals             { return approvals{c} }
func (c *conn) Outbox() store.Outbox                   { return outbox{c} }

// read runs fn on the open transaction, or on the read pool.
func (c *conn) read(fn func(q querier) error) error {
	if c.tx != nil {
		return mapErr(fn(cachedTx{c.tx, c.s.ws}))
	}
	return mapErr(fn(cachedPool{c.s.rs}))
}

// write runs fn atomically, given the time to stamp rows with: in a
// savepoint of the open transaction, or in a transaction of its own on the
// writer.
func (c *conn) write(ctx context.Context, fn func(q querier, now time.Time) error) error {
	if c.tx != nil {
		if _, err := c.tx.ExecContext(ctx, `SAVEPOINT method`); err != nil {
			return mapErr(err)
		}
		if err := fn(cachedTx{c.tx, c.s.ws}, now()); err != nil {
			ctx := context.WithoutCancel(ctx)
			_, _ = c.tx.ExecContext(ctx, `ROLLBACK TO method`)
			_, _ = c.tx.ExecContext(ctx, `RELEASE method`)
			return mapErr(err)
		}
		_, err := c.tx.ExecContext(ctx, `RELEASE method`)
		return mapErr(err)
	}
	tx, err := c.s.w.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	defer c.s.ws.prepareWanted(context.WithoutCancel(ctx))
	if err := fn(cachedTx{tx, c.s.ws}, now()); err != nil {
		_ = tx.Rollback()
		return mapErr(err)
	}
	return mapErr(tx.Commit())
}

// mapErr turns SQLite's errors into the store's.
func mapErr(err error) error {
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrInvalid) {
		return err
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return &store.DriverError{Sentinel: store.ErrConflict, Err: err}
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return &store.DriverError{Sentinel: store.ErrNotFound, Err: err}
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_DATATYPE:
			return &store.DriverError{Sentinel: store.ErrInvalid, Err: err}
		}
	}
	return fmt.Errorf("sqlite: %w", err)
}

// missing explains why a conditional update of table's row id changed
// nothing: ErrNotFound if the row does not exist, else ErrConflict.
func missing(ctx context.Context, q querier, table, id string) error {
	var ok bool
	if err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+` WHERE id = ?)`, id).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return store.ErrNotFound
	}
	return store.ErrConflict
}
