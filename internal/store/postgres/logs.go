package postgres

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/store/internal/logchunk"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

// logs keeps a job's lines in chunks (logchunk.go), one log_chunks row per
// Append of up to logchunk.MaxLines lines, rather than one row per line: a row
// costs far more than its bytes. The chunks of a job cover disjoint ranges
// of Seq, [first_seq, last_seq]; changes to a job's chunks hold an advisory
// lock on the job, so that servers appending to one job at once keep them so.
type logs struct{ *conn }

const (
	// sqlLockJob takes the job's lock until the transaction ends.
	sqlLockJob = `SELECT pg_advisory_xact_lock(hashtextextended('oxide.logs.' || $1, 0))`
	// sqlAppendChunk inserts a chunk if its lines follow the job's last
	// ones, as they usually do. (It runs after sqlLockJob, in a statement
	// of its own, so as to see the chunks of those that held the lock.)
	sqlAppendChunk = `INSERT INTO log_chunks (job_id, first_seq, last_seq, lines) SELECT $1, $2, $3, $4
		WHERE coalesce((SELECT last_seq FROM log_chunks WHERE job_id = $1 ORDER BY first_seq DESC LIMIT 1) < $2, true)`
	sqlInsertChunk = `INSERT INTO log_chunks (job_id, first_seq, last_seq, lines) VALUES ($1, $2, $3, $4)`
	// sqlChunksFrom lists, by Seq, up to $3 of the chunks that may hold
	// lines with Seq > $2: those after it and the one that may contain it.
	sqlChunksFrom = `SELECT first_seq, last_seq, lines FROM log_chunks
		WHERE job_id = $1 AND first_seq >= coalesce((SELECT max(first_seq) FROM log_chunks WHERE job_id = $1 AND first_seq <= $2), $2)
		ORDER BY first_seq LIMIT $3`
	// sqlChunksAfter lists up to $3 chunks that begin after $2, by Seq.
	sqlChunksAfter = `SELECT first_seq, last_seq, lines FROM log_chunks
		WHERE job_id = $1 AND first_seq > $2 ORDER BY first_seq LIMIT $3`
	sqlDeleteChunks = `DELETE FROM log_chunks WHERE job_id = $1 AND first_seq = ANY ($2)`
)

// encoded is a chunk ready to insert.
type encoded struct {
	first, last int64
	lines       []byte
}

func (c encoded) args(jobID string) []any { return []any{jobID, c.first, c.last, c.lines} }

// encode splits lines (by Seq, unique) into chunks, stamping those without a
// Time with now.
func encode(lines []store.LogLine, now time.Time) []encoded {
	w := chunkWriters.Get().(*logchunk.Writer)
	defer chunkWriters.Put(w)
	w.Reset()
	var cs []encoded
	for i, l := range lines {
		at := l.Time
		if at.IsZero() {
			at = now
		}
		w.Add(l, at.UnixMicro())
		if w.Full() || i == len(lines)-1 {
			cs = append(cs, encoded{w.First, w.Last, append([]byte(nil), w.Chunk()...)})
			w.Reset()
		}
	}
	return cs
}

var chunkWriters = sync.Pool{New: func() any { return new(logchunk.Writer) }}

func (t logs) Append(ctx context.Context, jobID string, lines []store.LogLine) (n int, err error) {
	if len(lines) == 0 {
		return 0, nil
	}
	lines = logchunk.BySeq(lines)
	now := time.Now().UTC()
	cs := encode(lines, now)
	if t.tx == nil && len(cs) == 1 {
		// The usual case, lines that follow the job's last ones, in one
		// round trip.
		ok, err := t.appendChunk(ctx, jobID, cs[0])
		if err != nil {
			return 0, mapErr(err)
		}
		if ok {
			return len(lines), nil
		}
	}
	err = t.write(ctx, func(q querier) error {
		if _, err := q.Exec(ctx, sqlLockJob, jobID); err != nil {
			return err
		}
		n, err = merge(ctx, q, jobID, lines, cs, now)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// appendChunk stores c, in a transaction of its own, if its lines follow the
// job's last ones, and reports whether they did.
func (t logs) appendChunk(ctx context.Context, jobID string, c encoded) (ok bool, err error) {
	pc, err := t.s.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("postgres: %w", err)
	}
	defer pc.Release()
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(sqlLockJob, jobID)
	b.Queue(sqlAppendChunk, c.args(jobID)...)
	b.Queue(`COMMIT`)
	br := pc.SendBatch(ctx, b)
	var n int64
	for i := range b.Len() {
		tag, err1 := br.Exec()
		if err1 != nil {
			err = err1
			break
		}
		if i == 2 {
			n = tag.RowsAffected()
		}
	}
	if err = cmp.Or(err, br.Close()); err != nil {
		if c := pc.Conn(); !c.IsClosed() && c.PgConn().TxStatus() != 'I' {
			_, _ = pc.Exec(context.WithoutCancel(ctx), `ROLLBACK`)
		}
		return false, err
	}
	return n == 1, nil
}

// merge stores those of lines (by Seq, unique; cs, encoded) that the job's
// chunks lack, by rewriting the chunks that overlap them, and returns how
// many it stored: lines that follow the job's last ones, an agent resending
// lines after a reconnect, or lines that fill a gap. It holds the job's lock.
func merge(ctx context.Context, q querier, jobID string, lines []store.LogLine, cs []encoded, now time.Time) (int, error) {
	lo, hi := lines[0].Seq, lines[len(lines)-1].Seq
	rows, err := q.Query(ctx, `SELECT first_seq, lines FROM log_chunks
		WHERE job_id = $1 AND first_seq <= $3 AND last_seq >= $2
			AND first_seq >= coalesce((SELECT max(first_seq) FROM log_chunks WHERE job_id = $1 AND first_seq <= $2), $2)
		ORDER BY first_seq`, jobID, lo, hi)
	if err != nil {
		return 0, err
	}
	var (
		old    []store.LogLine // the lines of the chunks that overlap [lo, hi]
		firsts []int64         // those chunks
	)
	for rows.Next() {
		var first int64
		var c []byte
		if err := rows.Scan(&first, &c); err != nil {
			rows.Close()
			return 0, err
		}
		firsts = append(firsts, first)
		if old, err = logchunk.Decode(old, c, math.MinInt64, 0); err != nil {
			rows.Close()
			return 0, err
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(firsts) == 0 {
		// Nothing overlaps: store the lines as they are.
		for _, c := range cs {
			if _, err := q.Exec(ctx, sqlInsertChunk, c.args(jobID)...); err != nil {
				return 0, err
			}
		}
		return len(lines), nil
	}
	merged, n := logchunk.Merge(old, lines)
	if n == 0 {
		return 0, nil
	}
	if _, err := q.Exec(ctx, sqlDeleteChunks, jobID, firsts); err != nil {
		return 0, err
	}
	for _, c := range encode(merged, now) {
		if _, err := q.Exec(ctx, sqlInsertChunk, c.args(jobID)...); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Read reads chunks a few at a time, more each time, as it does not know
// how many lines they hold.
func (t logs) Read(ctx context.Context, jobID string, after int64, limit int) (ls []store.LogLine, err error) {
	if after == math.MaxInt64 {
		return []store.LogLine{}, nil
	}
	err = t.read(ctx, func(q querier) error {
		// Chunks usually hold up to 100 lines.
		batch := int64(limit/100 + 2)
		if limit <= 0 {
			batch = math.MaxInt64
		}
		rows, err := q.Query(ctx, sqlChunksFrom, jobID, after, batch)
		for err == nil {
			var k, first int64 // chunks read, the last one's first_seq
			for (limit <= 0 || len(ls) < limit) && rows.Next() {
				var c []byte
				if err := rows.Scan(&first, nil, &c); err != nil {
					rows.Close()
					return err
				}
				k++
				if ls, err = logchunk.Decode(ls, c, after+1, limit); err != nil {
					rows.Close()
					return err
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil || k < batch || limit > 0 && len(ls) >= limit {
				return err
			}
			batch *= 2
			rows, err = q.Query(ctx, sqlChunksAfter, jobID, first, batch)
		}
		return err
	})
	if ls == nil && err == nil {
		ls = []store.LogLine{}
	}
	return ls, err
}
