package sqlite

import (
	"context"
	"database/sql"
	"math"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/store/internal/logchunk"

	"github.com/oxide-ci/oxide/internal/store"
)

// logs keeps a job's lines in chunks (logchunk.go), one log_chunks row per
// Append of up to logchunk.MaxLines lines, rather than one row per line: SQLite
// spends most of an INSERT on the row, not on its bytes. The chunks of a job
// cover disjoint ranges of Seq: [first_seq, last_seq].
type logs struct{ *conn }

// The statements of Logs (prepared once, as all, by the stmtCache):
// parsing one costs about as much as running it.
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
	err = t.write(ctx, func(q querier, now time.Time) error {
		// The usual case: lines that follow the job's last ones. (The
		// INSERT finds out whether the job exists.)
		ok, err := insertChunks(ctx, q, jobID, lines, now, true)
		if err != nil || ok {
			n = len(lines)
			return err
		}
		n, err = merge(ctx, q, jobID, lines, now)
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
func merge(ctx context.Context, q querier, jobID string, lines []store.LogLine, now time.Time) (int, error) {
	lo, hi := lines[0].Seq, lines[len(lines)-1].Seq
	rows, err := q.QueryContext(ctx, sqlChunksFrom, jobID, lo)
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
		if _, err := execN(ctx, q, sqlDeleteChunk, jobID, first); err != nil {
			return 0, err
		}
	}
	_, err = insertChunks(ctx, q, jobID, merged, now, false)
	return n, err
}

// insertChunks stores lines (by Seq, unique), stamping those without a Time
// with now. If after, only if they follow the job's last lines: ok reports
// whether they did.
func insertChunks(ctx context.Context, q querier, jobID string, lines []store.LogLine, now time.Time, after bool) (ok bool, err error) {
	w := chunkWriters.Get().(*logchunk.Writer)
	defer chunkWriters.Put(w)
	w.Reset()
	ok = true
	flush := func() error {
		query := sqlInsertChunk
		if after {
			query, after = sqlAppendChunk, false
		}
		k, err := execN(ctx, q, query, jobID, w.First, w.Last, w.Chunk())
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
		rows, err := q.QueryContext(ctx, sqlChunksFrom, jobID, after)
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

// execN runs query and returns the number of rows it changed.
func execN(ctx context.Context, q querier, query string, args ...any) (int64, error) {
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
