package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

type jobs struct{ *conn }

const jobCols = `id, coalesce(run_id, ''), coalesce(stage_id, ''), name, spec, labels, priority, state, attempt, max_attempts,
	coalesce(worker_id, ''), lease_until, exit_code, error, created_at, queued_at, started_at, finished_at`

func scanJob(r pgx.Row) (store.Job, error) {
	var j store.Job
	err := r.Scan(&j.ID, &j.RunID, &j.StageID, &j.Name, &j.Spec, &j.Labels, &j.Priority, &j.State, &j.Attempt, &j.MaxAttempts,
		&j.WorkerID, &j.LeaseUntil, &j.ExitCode, &j.Error, &j.CreatedAt, &j.QueuedAt, &j.StartedAt, &j.FinishedAt)
	j.Labels = nilIfEmpty(j.Labels)
	return j, err
}

func jobID(j store.Job) string    { return j.ID }
func jobState(j store.Job) string { return string(j.State) }

// Enqueue copies the batch in with COPY, stamped with the transaction's
// now().
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
		j.Labels = nilIfEmpty(j.Labels)
		j.WorkerID, j.LeaseUntil, j.ExitCode, j.Error, j.StartedAt, j.FinishedAt = "", nil, nil, "", nil, nil
		out[i] = j
	}
	if len(out) == 0 {
		return out, nil
	}
	err := t.write(ctx, func(q querier) error {
		var now time.Time
		if err := q.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			return err
		}
		rows := make([][]any, len(out))
		for i := range out {
			j := &out[i]
			j.CreatedAt, j.QueuedAt = now, store.QueueTime(j, now)
			rows[i] = []any{j.ID, orNull(j.RunID), orNull(j.StageID), j.Name, jsonArg(j.Spec), nonNil(j.Labels),
				j.Priority, string(j.State), j.MaxAttempts, j.CreatedAt, j.QueuedAt}
		}
		_, err := q.CopyFrom(ctx, pgx.Identifier{"jobs"},
			[]string{"id", "run_id", "stage_id", "name", "spec", "labels", "priority", "state", "max_attempts", "created_at", "queued_at"},
			pgx.CopyFromRows(rows))
		if err != nil {
			return err
		}
		return emitRows(ctx, q, "job", out, jobID, jobState)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t jobs) Get(ctx context.Context, id string) (j store.Job, err error) {
	err = t.read(ctx, func(q querier) error {
		j, err = scanJob(q.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1`, id))
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
	sql := s.sql(`SELECT `+jobCols+` FROM jobs`, `created_at, seq`, f.Limit, f.Offset)
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, sql, s.args...)
		js, err = all(rows, err, scanJob)
		return err
	})
	return js, err
}

func (t jobs) Count(ctx context.Context, state store.JobState) (n int, err error) {
	err = t.read(ctx, func(q querier) error {
		return q.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE state = $1`, state).Scan(&n)
	})
	return n, err
}

// changed runs a statement that updates jobs and returns them, and emits
// their events.
func (t jobs) changed(ctx context.Context, sql string, args ...any) (js []store.Job, err error) {
	err = t.write(ctx, func(q querier) error {
		rows, err := q.Query(ctx, sql, args...)
		if js, err = all(rows, err, scanJob); err != nil {
			return err
		}
		return emitRows(ctx, q, "job", js, jobID, jobState)
	})
	return js, err
}

// changedOne is changed for a single job under lease or state conditions:
// when none changed, ErrNotFound or ErrConflict.
func (t jobs) changedOne(ctx context.Context, id, sql string, args ...any) (j store.Job, err error) {
	err = t.write(ctx, func(q querier) error {
		j, err = scanJob(q.QueryRow(ctx, sql, args...))
		if errors.Is(err, pgx.ErrNoRows) {
			return missing(ctx, q, "jobs", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "job", j.ID, string(j.State), j)
	})
	return j, err
}

func (t jobs) Queue(ctx context.Context, ids ...string) ([]store.Job, error) {
	return t.changed(ctx, `UPDATE jobs SET state = 'queued', queued_at = now()
		WHERE id = ANY($1) AND state = 'pending' RETURNING `+jobCols, ids)
}

// Claim locks the first queued jobs that match, skipping those that other
// claims hold locked, and assigns them in the same statement.
func (t jobs) Claim(ctx context.Context, workerID string, labels []string, limit int, lease time.Duration) ([]store.Job, error) {
	if workerID == "" || limit <= 0 || lease <= 0 {
		return nil, fmt.Errorf("%w: claim needs a worker, a limit and a lease", store.ErrInvalid)
	}
	// coalesce hides <@ from the planner: its default estimate (0.5% of
	// rows match) would have it sort the whole queue rather than walk the
	// jobs_queue index.
	return t.changed(ctx, `WITH picked AS MATERIALIZED (
			SELECT id FROM jobs
			WHERE state = 'queued' AND queued_at <= now() AND coalesce(labels <@ $2::text[], false)
			ORDER BY priority DESC, queued_at, seq
			LIMIT $3
			FOR UPDATE SKIP LOCKED),
		claimed AS (
			UPDATE jobs SET state = 'assigned', worker_id = $1, attempt = attempt + 1,
				lease_until = now() + make_interval(secs => $4)
			WHERE id IN (SELECT id FROM picked)
			RETURNING *)
		SELECT `+jobCols+` FROM claimed ORDER BY priority DESC, queued_at, seq`,
		workerID, nonNil(labels), limit, lease.Seconds())
}

func (t jobs) Claimable(ctx context.Context, limit, offset int) (js []store.Job, err error) {
	if limit <= 0 || offset < 0 {
		return nil, fmt.Errorf("%w: claimable needs a limit and an offset of 0 or more", store.ErrInvalid)
	}
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+jobCols+` FROM jobs WHERE state = 'queued' AND queued_at <= now()
			ORDER BY priority DESC, queued_at, seq LIMIT $1 OFFSET $2`, limit, offset)
		js, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Job, error) { return scanJob(r) })
		return err
	})
	return js, err
}

func (t jobs) Take(ctx context.Context, id, workerID string, lease time.Duration) (store.Job, error) {
	if workerID == "" || lease <= 0 {
		return store.Job{}, fmt.Errorf("%w: take needs a worker and a lease", store.ErrInvalid)
	}
	return t.changedOne(ctx, id, `UPDATE jobs SET state = 'assigned', worker_id = $2, attempt = attempt + 1,
			lease_until = now() + make_interval(secs => $3)
		WHERE id = $1 AND state = 'queued' AND queued_at <= now() RETURNING `+jobCols,
		id, workerID, lease.Seconds())
}

func (t jobs) Start(ctx context.Context, l store.Lease) (store.Job, error) {
	return t.changedOne(ctx, l.JobID, `UPDATE jobs SET state = 'running', started_at = now()
		WHERE id = $1 AND worker_id = $2 AND attempt = $3 AND state = 'assigned' RETURNING `+jobCols,
		l.JobID, l.WorkerID, l.Attempt)
}

func (t jobs) Extend(ctx context.Context, workerID string, lease time.Duration) (ids []string, err error) {
	err = t.write(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `UPDATE jobs SET lease_until = now() + make_interval(secs => $2)
			WHERE worker_id = $1 AND state IN ('assigned', 'running') RETURNING id`, workerID, lease.Seconds())
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	slices.Sort(ids)
	return ids, err
}

func (t jobs) Complete(ctx context.Context, results ...store.Result) ([]store.Job, error) {
	n := len(results)
	ids, workers, states, errs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempts, exits := make([]int, n), make([]*int, n)
	for i, r := range results {
		if !r.State.Done() {
			return nil, fmt.Errorf("%w: a job completes as succeeded, failed, timeout or cancelled, not %q", store.ErrInvalid, r.State)
		}
		ids[i], workers[i], attempts[i], states[i], exits[i], errs[i] = r.JobID, r.WorkerID, r.Attempt, string(r.State), r.ExitCode, r.Error
	}
	if n == 0 {
		return nil, nil
	}
	return t.changed(ctx, `UPDATE jobs SET state = r_state, exit_code = r_exit_code, error = r_error,
			lease_until = NULL, finished_at = now()
		FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[])
			AS r (r_id, r_worker, r_attempt, r_state, r_exit_code, r_error)
		WHERE id = r_id AND worker_id = r_worker AND attempt = r_attempt AND state IN ('assigned', 'running')
		RETURNING `+jobCols, ids, workers, attempts, states, exits, errs)
}

// requeue is the SET clause of a failed attempt: back to the queue while
// attempts remain, else failed.
const requeue = `state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
	worker_id = CASE WHEN attempt < max_attempts THEN NULL ELSE worker_id END,
	started_at = CASE WHEN attempt < max_attempts THEN NULL ELSE started_at END,
	finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,
	lease_until = NULL`

func (t jobs) Fail(ctx context.Context, l store.Lease, reason string) (store.Job, error) {
	return t.changedOne(ctx, l.JobID, `UPDATE jobs SET `+requeue+`, error = $4
		WHERE id = $1 AND worker_id = $2 AND attempt = $3 AND state IN ('assigned', 'running') RETURNING `+jobCols,
		l.JobID, l.WorkerID, l.Attempt, reason)
}

func (t jobs) RequeueExpired(ctx context.Context) ([]store.Job, error) {
	return t.changed(ctx, `UPDATE jobs SET `+requeue+`, error = 'lease expired'
		WHERE state IN ('assigned', 'running') AND lease_until < now() RETURNING `+jobCols)
}

func (t jobs) Cancel(ctx context.Context, id, reason string) (store.Job, error) {
	return t.changedOne(ctx, id, `UPDATE jobs SET state = 'cancelled', error = $2, lease_until = NULL, finished_at = now()
		WHERE id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled', 'timeout') RETURNING `+jobCols, id, reason)
}
