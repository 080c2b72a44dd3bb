package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStmts bounds a stmtCache: the store's statements are a few
// hundred texts; one built at run time beyond the bound is parsed each time.
const maxCachedStmts = 512

// stmtCache keeps a prepared statement per query text on a pool: SQLite
// spends longer parsing most of the store's statements than running them
// (a sixth of the server's CPU per job in bench/throughput). On the
// writer, whose one connection an open transaction holds, a statement
// missing from the cache is run unprepared and prepared once that
// transaction has ended (prepareWanted).
type stmtCache struct {
	db     *sql.DB
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	wanted map[string]bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, wanted: map[string]bool{}}
}

// get returns query's statement, or nil after noting that it is wanted.
func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, known := c.stmts[query]
	if !known && len(c.stmts)+len(c.wanted) < maxCachedStmts {
		c.wanted[query] = true
	}
	return st
}

// prepareWanted prepares the statements that get was asked for in vain;
// one that fails to prepare is run unprepared from then on. It holds no
// lock while it prepares: on the writer, that waits for the connection.
func (c *stmtCache) prepareWanted(ctx context.Context) {
	c.mu.Lock()
	var queries []string
	for q := range c.wanted {
		queries = append(queries, q)
	}
	c.mu.Unlock()
	for _, q := range queries {
		st, err := c.db.PrepareContext(ctx, q)
		c.mu.Lock()
		switch {
		case err != nil:
			c.stmts[q] = nil // known, not prepared
		case c.stmts[q] == nil:
			c.stmts[q] = st
			st = nil
		}
		delete(c.wanted, q)
		c.mu.Unlock()
		if st != nil {
			st.Close() // prepared twice, by racing calls
		}
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.stmts {
		if st != nil {
			st.Close()
		}
	}
	clear(c.stmts)
}

// cachedTx runs statements in tx, prepared ones from cache where it has
// them (database/sql reuses them on tx's connection without a new parse).
type cachedTx struct {
	tx    *sql.Tx
	cache *stmtCache
}

func (q cachedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := q.cache.get(query); st != nil {
		return q.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return q.tx.ExecContext(ctx, query, args...)
}

func (q cachedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := q.cache.get(query); st != nil {
		return q.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q cachedTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := q.cache.get(query); st != nil {
		return q.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}

// PrepareContext returns query's statement in tx; closing it leaves the
// cached one prepared.
func (q cachedTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := q.cache.get(query); st != nil {
		return q.tx.StmtContext(ctx, st), nil
	}
	return q.tx.PrepareContext(ctx, query)
}

// cachedPool runs statements on a pool that no transaction holds (the
// read pool), prepared on first use.
type cachedPool struct{ cache *stmtCache }

func (q cachedPool) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := q.cache.get(query); st != nil {
		return st
	}
	q.cache.prepareWanted(ctx)
	q.cache.mu.Lock()
	defer q.cache.mu.Unlock()
	return q.cache.stmts[query]
}

func (q cachedPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := q.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return q.cache.db.ExecContext(ctx, query, args...)
}

func (q cachedPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return q.cache.db.QueryContext(ctx, query, args...)
}

func (q cachedPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return q.cache.db.QueryRowContext(ctx, query, args...)
}

func (q cachedPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return q.cache.db.PrepareContext(ctx, query)
}
