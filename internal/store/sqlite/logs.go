package sqlite

import (
	"context"
	"database/sql"
	"github.com/oxide-ci/oxide/internal/store/internal/logchunk"
	"math"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// logs keeps a job's lines in chunks (logchunk.go), one log_chunks row per
// Append of up to logchunk.MaxLines lines, rather than one row per line: SQLite
// spends most of an INSERT on the row, not on its bytes. The chunks of a job
// cover disjoint ranges of Seq: [first_seq, last_seq].
type logs struct{ *conn }

// The statements of Logs, kept prepared (logStmts): parsing one costs about
// as much as running it.
const (
	// sqlAppendChunk inserts a chunk if its lines follow the job's last
	// ones, as they usually do.
	sqlAppendChunk = `INSERT INTO log_chunks (job_id, first_seq, last_seq, lines) SELECT ?1, ?2, ?3, ?4
		WHERE coalesce((SELECT last_seq FROM log_chunks WHERE job_id = ?1 ORDER BY first_seq DESC LIMIT 1) < ?2, true)`
	sqlInsertChunk = `INSERT INTO log_chunks (job_id, first_seq, last_seq, lines) VALUES (?, ?, ?, ?)`
	// sqlChunksFrom lists the chunks that may hold lines with Seq > ?2,
	// by Seq: those after it and the one that may contain it.
	sqlChunksFrom = `SELECT first_seq, last_seq, lines FROM log_chunks
		WHERE job_id = ?1 AND first_seq >= coalesce((SELECT max(first_seq) FROM log_chunks WHERE job_id = ?1 AND first_seq <= ?2), ?2)
		ORDER BY first_seq`
	sqlDeleteChunk = `DELETE FROM log_chunks WHERE job_id = ? AND first_seq = ?`
)

func (t logs) Append(ctx context.Context, jobID string, lines []store.LogLine) (n int, err error) {
	if len(lines) == 0 {
		return 0, nil
	}
	lines = logchunk.BySeq(lines)
	if t.tx == nil {
		// Now, not in the transaction, which holds the writer's one
		// connection.
		if err := t.s.logStmts.prepare(ctx, t.s.w); err != nil {
			return 0, mapErr(err)
		}
	}
	err = t.write(ctx, func(q querier, now time.Time) error {
		st := stmts{tx: q.(*sql.Tx), c: &t.s.logStmts}
		// The usual case: lines that follow the job's last ones. (The
		// INSERT finds out whether the job exists.)
		ok, err := insertChunks(ctx, st, jobID, lines, now, true)
		if err != nil || ok {
			n = len(lines)
			return err
		}
		n, err = merge(ctx, st, jobID, lines, now)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// merge stores those of lines (by Seq, unique) that the job's chunks lack, by
// rewriting the chunks that overlap them, and returns how many it stored: an
// agent resending lines after a reconnect, or lines that fill a gap.
func merge(ctx context.Context, st stmts, jobID string, lines []store.LogLine, now time.Time) (int, error) {
	lo, hi := lines[0].Seq, lines[len(lines)-1].Seq
	rows, err := st.query(ctx, sqlChunksFrom, jobID, lo)
	if err != nil {
		return 0, err
	}
	var (
		old    []store.LogLine // the lines of the chunks that overlap [lo, hi]
		firsts []int64         // those chunks
	)
	for rows.Next() {
		var first, last int64
		var c sql.RawBytes
		if err := rows.Scan(&first, &last, &c); err != nil {
			rows.Close()
			return 0, err
		}
		if first > hi {
			break
		}
		if last < lo {
			continue
		}
		firsts = append(firsts, first)
		if old, err = logchunk.Decode(old, c, first, 0); err != nil {
			rows.Close()
			return 0, err
		}
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	merged, n := logchunk.Merge(old, lines)
	if n == 0 {
		return 0, nil
	}
	for _, first := range firsts {
		if _, err := st.exec(ctx, sqlDeleteChunk, jobID, first); err != nil {
			return 0, err
		}
	}
	_, err = insertChunks(ctx, st, jobID, merged, now, false)
	return n, err
}

// insertChunks stores lines (by Seq, unique), stamping those without a Time
// with now. If after, only if they follow the job's last lines: ok reports
// whether they did.
func insertChunks(ctx context.Context, st stmts, jobID string, lines []store.LogLine, now time.Time, after bool) (ok bool, err error) {
	w := chunkWriters.Get().(*logchunk.Writer)
	defer chunkWriters.Put(w)
	w.Reset()
	ok = true
	flush := func() error {
		query := sqlInsertChunk
		if after {
			query, after = sqlAppendChunk, false
		}
		k, err := st.exec(ctx, query, jobID, w.First, w.Last, w.Chunk())
		ok = ok && k == 1
		w.Reset()
		return err
	}
	for _, l := range lines {
		at := l.Time
		if at.IsZero() {
			at = now
		}
		w.Add(l, at.UnixMicro())
		if w.Full() {
			if err := flush(); err != nil || !ok {
				return ok, err
			}
		}
	}
	if w.N > 0 {
		err = flush()
	}
	return ok, err
}

var chunkWriters = sync.Pool{New: func() any { return new(logchunk.Writer) }}

func (t logs) Read(ctx context.Context, jobID string, after int64, limit int) (ls []store.LogLine, err error) {
	if after == math.MaxInt64 {
		return nil, nil
	}
	err = t.read(func(q querier) error {
		var rows *sql.Rows
		var err error
		if t.tx != nil {
			rows, err = t.tx.QueryContext(ctx, sqlChunksFrom, jobID, after)
		} else {
			var st *sql.Stmt
			if st, err = t.s.logStmts.readerStmt(ctx, t.s.r); err == nil {
				rows, err = st.QueryContext(ctx, jobID, after)
			}
		}
		if err != nil {
			return err
		}
		defer rows.Close()
		for (limit <= 0 || len(ls) < limit) && rows.Next() {
			var first, last int64
			var c sql.RawBytes
			if err := rows.Scan(&first, &last, &c); err != nil {
				return err
			}
			if ls, err = logchunk.Decode(ls, c, after+1, limit); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	return ls, err
}

// logStmts holds the statements of Logs: those of Append prepared on the
// writer, the reader's on the read pool.
type logStmts struct {
	mu     sync.Mutex
	w      map[string]*sql.Stmt
	reader *sql.Stmt
}

// prepare prepares Append's statements on db, if not yet done.
func (c *logStmts) prepare(ctx context.Context, db *sql.DB) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w != nil {
		return nil
	}
	w := map[string]*sql.Stmt{}
	for _, q := range []string{sqlAppendChunk, sqlInsertChunk, sqlChunksFrom, sqlDeleteChunk} {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			for _, st := range w {
				st.Close()
			}
			return err
		}
		w[q] = st
	}
	c.w = w
	return nil
}

// readerStmt returns Read's statement, prepared on db.
func (c *logStmts) readerStmt(ctx context.Context, db *sql.DB) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reader == nil {
		st, err := db.PrepareContext(ctx, sqlChunksFrom)
		if err != nil {
			return nil, err
		}
		c.reader = st
	}
	return c.reader, nil
}

// close closes the statements.
func (c *logStmts) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.w {
		st.Close()
	}
	if c.reader != nil {
		c.reader.Close()
	}
	c.w, c.reader = nil, nil
}

// stmts gives Append's statements in transaction tx.
type stmts struct {
	tx *sql.Tx
	c  *logStmts
}

// get returns query in tx: the prepared statement, or, inside InTx before
// any Append outside it prepared them, one prepared now (closed with tx).
func (s stmts) get(ctx context.Context, query string) (*sql.Stmt, error) {
	s.c.mu.Lock()
	st := s.c.w[query]
	s.c.mu.Unlock()
	if st == nil {
		return s.tx.PrepareContext(ctx, query)
	}
	return s.tx.StmtContext(ctx, st), nil
}

// exec runs query in tx and returns the number of rows it changed.
func (s stmts) exec(ctx context.Context, query string, args ...any) (int64, error) {
	st, err := s.get(ctx, query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// query runs query in tx.
func (s stmts) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.get(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}
