// Package postgres implements the store on PostgreSQL, for one or many
// servers sharing a database.
//
// Every method runs in a transaction; timestamps come from the database's
// clock (now()), so that servers agree on leases whatever their own clocks
// say. Open applies the embedded migrations under an advisory lock, so that
// servers starting together migrate once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/internal/schema"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a PostgreSQL database. It implements store.Store.
type Store struct {
	pool *pgxpool.Pool
	conn
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn (a libpq URL or key=value string,
// with pgx's extensions; pgxpool's pool_max_conns sets the number of
// connections, default max(4, the number of CPUs)) and migrates its schema. Tables live in the
// first schema of the search_path, which dsn may set (search_path=NAME).
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		// Times come back in UTC, whatever the session's time zone.
		c.TypeMap().RegisterType(&pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID, Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC}})
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool}
	s.conn = conn{s: s}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections, once those in use are released.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// InTx implements store.Store.
func (s *Store) InTx(ctx context.Context, fn func(store.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return mapErr(err)
	}
	if err := fn(&conn{s: s, tx: tx}); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	return mapErr(tx.Commit(ctx))
}

// migrate applies the migrations that the schema_migrations table does not
// list, each in its own transaction, holding an advisory lock keyed by the
// schema so that concurrent servers wait for each other.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := schema.Load(migrations, "migrations")
	if err != nil {
		return err
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pc.Release()
	const key = `hashtextextended('oxide.migrate.' || current_schema(), 0)`
	if _, err := pc.Exec(ctx, `SELECT pg_advisory_lock(`+key+`)`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _, _ = pc.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(`+key+`)`) }()
	if _, err := pc.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	rows, _ := pc.Query(ctx, `SELECT version FROM schema_migrations`)
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	done := map[int]bool{}
	for _, v := range applied {
		done[v] = true
	}
	for _, m := range ms {
		if done[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, pc, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// querier is what statements run on: a connection or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// conn implements store.Tx: on the Store's pool when tx is nil, else inside
// tx.
type conn struct {
	s  *Store
	tx pgx.Tx
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

// read runs fn on the open transaction, or on a pooled connection.
func (c *conn) read(ctx context.Context, fn func(q querier) error) error {
	if c.tx != nil {
		return mapErr(fn(c.tx))
	}
	return mapErr(fn(c.s.pool))
}

// write runs fn atomically: in a savepoint of the open transaction, or in a
// transaction of its own.
func (c *conn) write(ctx context.Context, fn func(q querier) error) error {
	if c.tx != nil {
		return mapErr(pgx.BeginFunc(ctx, c.tx, func(tx pgx.Tx) error { return fn(tx) }))
	}
	return mapErr(pgx.BeginFunc(ctx, c.s.pool, func(tx pgx.Tx) error { return fn(tx) }))
}

// mapErr turns PostgreSQL's errors into the store's.
func mapErr(err error) error {
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrInvalid) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return &store.DriverError{Sentinel: store.ErrConflict, Err: err}
		case pe.Code == "23503": // foreign_key_violation
			return &store.DriverError{Sentinel: store.ErrNotFound, Err: err}
		case pe.Code[:2] == "22" || pe.Code == "23502" || pe.Code == "23514": // data exception, not null, check
			return &store.DriverError{Sentinel: store.ErrInvalid, Err: err}
		}
	}
	return fmt.Errorf("postgres: %w", err)
}

// missing explains why a conditional update of table's row id changed
// nothing: ErrNotFound if the row does not exist, else ErrConflict.
func missing(ctx context.Context, q querier, table, id string) error {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+` WHERE id = $1)`, id).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return store.ErrNotFound
	}
	return store.ErrConflict
}
