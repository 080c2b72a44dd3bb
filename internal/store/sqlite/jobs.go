package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type jobs struct{ *conn }

const jobCols = `id, coalesce(run_id, ''), coalesce(stage_id, ''), name, spec, labels, priority, state, attempt, max_attempts,
	coalesce(worker_id, ''), lease_until, exit_code, error, created_at, queued_at, started_at, finished_at`

func scanJob(r scanner) (store.Job, error) {
	var j store.Job
	err := r.Scan(&j.ID, &j.RunID, &j.StageID, &j.Name, rawCol{&j.Spec}, jsonCol{&j.Labels}, &j.Priority, &j.State, &j.Attempt,
		&j.MaxAttempts, &j.WorkerID, nullTimeCol{&j.LeaseUntil}, &j.ExitCode, &j.Error,
		timeCol{&j.CreatedAt}, nullTimeCol{&j.QueuedAt}, nullTimeCol{&j.StartedAt}, nullTimeCol{&j.FinishedAt})
	if len(j.Labels) == 0 {
		j.Labels = nil
	}
	return j, err
}

func jobID(j store.Job) string    { return j.ID }
func jobState(j store.Job) string { return string(j.State) }

func (t jobs) Enqueue(ctx context.Context, in ...store.Job) ([]store.Job, error) {
	out := make([]store.Job, len(in))
	for i, j := range in {
		if j.State == "" {
			j.State = store.JobQueued
		}
		if j.State != store.JobQueued && j.State != store.JobPending {
			return nil, fmt.Errorf("%w: a new job is queued or pending, not %q", store.ErrInvalid, j.State)
		}
		if j.MaxAttempts == 0 {
			j.MaxAttempts = store.DefaultMaxAttempts
		}
		if j.MaxAttempts < 0 || j.Attempt != 0 {
			return nil, fmt.Errorf("%w: job %q: max attempts %d, attempt %d", store.ErrInvalid, j.Name, j.MaxAttempts, j.Attempt)
		}
		if j.ID == "" {
			j.ID = store.NewID()
		}
		if len(j.Labels) == 0 {
			j.Labels = nil
		}
		j.WorkerID, j.LeaseUntil, j.ExitCode, j.Error, j.StartedAt, j.FinishedAt = "", nil, nil, "", nil, nil
		out[i] = j
	}
	if len(out) == 0 {
		return out, nil
	}
	err := t.write(ctx, func(q querier, now time.Time) error {
		for i := range out {
			out[i].CreatedAt, out[i].QueuedAt = now, store.QueueTime(&out[i], now)
		}
		err := each(ctx, q, `INSERT INTO jobs (id, run_id, stage_id, name, spec, labels, priority, state, max_attempts,
				created_at, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, out,
			func(j store.Job) []any {
				return []any{j.ID, orNull(j.RunID), orNull(j.StageID), j.Name, jsonArg(j.Spec), labelsArg(j.Labels),
					j.Priority, string(j.State), j.MaxAttempts, ts(now), tsOrNull(j.QueuedAt)}
			})
		if err != nil {
			return err
		}
		return emitRows(ctx, q, now, "job", out, jobID, jobState)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t jobs) Get(ctx context.Context, id string) (j store.Job, err error) {
	err = t.read(func(q querier) error {
		j, err = scanJob(q.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
		return err
	})
	return j, err
}

func (t jobs) List(ctx context.Context, f store.JobFilter) (js []store.Job, err error) {
	var s sel
	if f.RunID != "" {
		s.cond(`run_id = ?`, f.RunID)
	}
	if f.State != "" {
		s.cond(`state = ?`, f.State)
	}
	if f.WorkerID != "" {
		s.cond(`worker_id = ?`, f.WorkerID)
	}
	query := s.sql(`SELECT `+jobCols+` FROM jobs`, `created_at, rowid`, f.Limit, f.Offset)
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, query, s.args...)
		js, err = all(rows, err, scanJob)
		return err
	})
	return js, err
}

func (t jobs) Count(ctx context.Context, state store.JobState) (n int, err error) {
	err = t.read(func(q querier) error {
		return q.QueryRowContext(ctx, `SELECT count(*) FROM jobs WHERE state = ?`, state).Scan(&n)
	})
	return n, err
}

// update runs a statement that updates jobs and returns them, and emits
// their events.
func update(ctx context.Context, q querier, now time.Time, query string, args ...any) ([]store.Job, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	js, err := all(rows, err, scanJob)
	if err != nil {
		return nil, err
	}
	return js, emitRows(ctx, q, now, "job", js, jobID, jobState)
}

// changed runs update in a write transaction of its own; sql's parameters
// follow args, given the time.
func (t jobs) changed(ctx context.Context, query string, args func(now time.Time) []any) (js []store.Job, err error) {
	err = t.write(ctx, func(q querier, now time.Time) error {
		js, err = update(ctx, q, now, query, args(now)...)
		return err
	})
	return js, err
}

// changedOne is changed for a single job under lease or state conditions:
// when none changed, ErrNotFound or ErrConflict.
func (t jobs) changedOne(ctx context.Context, id, query string, args func(now time.Time) []any) (j store.Job, err error) {
	err = t.write(ctx, func(q querier, now time.Time) error {
		j, err = scanJob(q.QueryRowContext(ctx, query, args(now)...))
		if errors.Is(err, sql.ErrNoRows) {
			return missing(ctx, q, "jobs", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "job", j.ID, string(j.State), j)
	})
	return j, err
}

func (t jobs) Queue(ctx context.Context, ids ...string) ([]store.Job, error) {
	return t.changed(ctx, `UPDATE jobs SET state = 'queued', queued_at = ?
		WHERE id IN (SELECT value FROM json_each(?)) AND state = 'pending' RETURNING `+jobCols,
		func(now time.Time) []any { return []any{ts(now), idsArg(ids)} })
}

// Claim picks the jobs and assigns them in the write transaction, which
// nothing else writes during.
func (t jobs) Claim(ctx context.Context, workerID string, labels []string, limit int, lease time.Duration) ([]store.Job, error) {
	if workerID == "" || limit <= 0 || lease <= 0 {
		return nil, fmt.Errorf("%w: claim needs a worker, a limit and a lease", store.ErrInvalid)
	}
	var js []store.Job
	err := t.write(ctx, func(q querier, now time.Time) error {
		rows, err := q.QueryContext(ctx, `SELECT id FROM jobs
			WHERE state = 'queued' AND queued_at <= ? AND (labels = '[]' OR NOT EXISTS (
				SELECT 1 FROM json_each(jobs.labels) AS l WHERE l.value NOT IN (SELECT value FROM json_each(?))))
			ORDER BY priority DESC, queued_at, rowid LIMIT ?`, ts(now), labelsArg(labels), limit)
		ids, err := all(rows, err, func(r scanner) (id string, err error) { return id, r.Scan(&id) })
		if err != nil || len(ids) == 0 {
			return err
		}
		if js, err = update(ctx, q, now, `UPDATE jobs SET state = 'assigned', worker_id = ?, attempt = attempt + 1, lease_until = ?
			WHERE id IN (SELECT value FROM json_each(?)) RETURNING `+jobCols, workerID, ts(now.Add(lease)), idsArg(ids)); err != nil {
			return err
		}
		pos := make(map[string]int, len(ids))
		for i, id := range ids {
			pos[id] = i
		}
		slices.SortFunc(js, func(a, b store.Job) int { return pos[a.ID] - pos[b.ID] })
		return nil
	})
	return js, err
}

func (t jobs) Claimable(ctx context.Context, limit, offset int) (js []store.Job, err error) {
	if limit <= 0 || offset < 0 {
		return nil, fmt.Errorf("%w: claimable needs a limit and an offset of 0 or more", store.ErrInvalid)
	}
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE state = 'queued' AND queued_at <= ?
			ORDER BY priority DESC, queued_at, rowid LIMIT ? OFFSET ?`, ts(now()), limit, offset)
		js, err = all(rows, err, scanJob)
		return err
	})
	return js, err
}

func (t jobs) Take(ctx context.Context, id, workerID string, lease time.Duration) (store.Job, error) {
	if workerID == "" || lease <= 0 {
		return store.Job{}, fmt.Errorf("%w: take needs a worker and a lease", store.ErrInvalid)
	}
	return t.changedOne(ctx, id, `UPDATE jobs SET state = 'assigned', worker_id = ?, attempt = attempt + 1, lease_until = ?
		WHERE id = ? AND state = 'queued' AND queued_at <= ? RETURNING `+jobCols,
		func(now time.Time) []any { return []any{workerID, ts(now.Add(lease)), id, ts(now)} })
}

func (t jobs) Start(ctx context.Context, l store.Lease) (store.Job, error) {
	return t.changedOne(ctx, l.JobID, `UPDATE jobs SET state = 'running', started_at = ?
		WHERE id = ? AND worker_id = ? AND attempt = ? AND state = 'assigned' RETURNING `+jobCols,
		func(now time.Time) []any { return []any{ts(now), l.JobID, l.WorkerID, l.Attempt} })
}

func (t jobs) Extend(ctx context.Context, workerID string, lease time.Duration) (ids []string, err error) {
	err = t.write(ctx, func(q querier, now time.Time) error {
		rows, err := q.QueryContext(ctx, `UPDATE jobs SET lease_until = ?
			WHERE worker_id = ? AND state IN ('assigned', 'running') RETURNING id`, ts(now.Add(lease)), workerID)
		ids, err = all(rows, err, func(r scanner) (id string, err error) { return id, r.Scan(&id) })
		return err
	})
	slices.Sort(ids)
	return ids, err
}

func (t jobs) Complete(ctx context.Context, results ...store.Result) (done []store.Job, err error) {
	for _, r := range results {
		if !r.State.Done() {
			return nil, fmt.Errorf("%w: a job completes as succeeded, failed, timeout or cancelled, not %q", store.ErrInvalid, r.State)
		}
	}
	if len(results) == 0 {
		return nil, nil
	}
	err = t.write(ctx, func(q querier, now time.Time) error {
		st, err := q.PrepareContext(ctx, `UPDATE jobs SET state = ?, exit_code = ?, error = ?, lease_until = NULL, finished_at = ?
			WHERE id = ? AND worker_id = ? AND attempt = ? AND state IN ('assigned', 'running') RETURNING `+jobCols)
		if err != nil {
			return err
		}
		defer st.Close()
		done = done[:0]
		for _, r := range results {
			j, err := scanJob(st.QueryRowContext(ctx, r.State, r.ExitCode, r.Error, ts(now), r.JobID, r.WorkerID, r.Attempt))
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			done = append(done, j)
		}
		return emitRows(ctx, q, now, "job", done, jobID, jobState)
	})
	return done, err
}

// requeue is the SET clause of a failed attempt, with parameters now and
// reason: back to the queue while attempts remain, else failed.
const requeue = `state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
	worker_id = CASE WHEN attempt < max_attempts THEN NULL ELSE worker_id END,
	started_at = CASE WHEN attempt < max_attempts THEN NULL ELSE started_at END,
	finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE ?1 END,
	lease_until = NULL, error = ?2`

func (t jobs) Fail(ctx context.Context, l store.Lease, reason string) (store.Job, error) {
	return t.changedOne(ctx, l.JobID, `UPDATE jobs SET `+requeue+`
		WHERE id = ?3 AND worker_id = ?4 AND attempt = ?5 AND state IN ('assigned', 'running') RETURNING `+jobCols,
		func(now time.Time) []any { return []any{ts(now), reason, l.JobID, l.WorkerID, l.Attempt} })
}

func (t jobs) RequeueExpired(ctx context.Context) ([]store.Job, error) {
	return t.changed(ctx, `UPDATE jobs SET `+requeue+`
		WHERE state IN ('assigned', 'running') AND lease_until < ?1 RETURNING `+jobCols,
		func(now time.Time) []any { return []any{ts(now), "lease expired"} })
}

func (t jobs) Cancel(ctx context.Context, id, reason string) (store.Job, error) {
	return t.changedOne(ctx, id, `UPDATE jobs SET state = 'cancelled', error = ?, lease_until = NULL, finished_at = ?
		WHERE id = ? AND state NOT IN ('succeeded', 'failed', 'cancelled', 'timeout') RETURNING `+jobCols,
		func(now time.Time) []any { return []any{reason, ts(now), id} })
}
