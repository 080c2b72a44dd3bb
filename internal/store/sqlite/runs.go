package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type pipelines struct{ *conn }

const pipelineCols = `id, name, repository, definition, created_at, updated_at`

func scanPipeline(r scanner) (store.Pipeline, error) {
	var p store.Pipeline
	err := r.Scan(&p.ID, &p.Name, &p.Repository, &p.Definition, timeCol{&p.CreatedAt}, timeCol{&p.UpdatedAt})
	return p, err
}

func (t pipelines) Create(ctx context.Context, p store.Pipeline) (store.Pipeline, error) {
	if p.Name == "" {
		return p, fmt.Errorf("%w: pipeline without a name", store.ErrInvalid)
	}
	if p.ID == "" {
		p.ID = store.NewID()
	}
	var out store.Pipeline
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanPipeline(q.QueryRowContext(ctx, `INSERT INTO pipelines (id, name, repository, definition, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING `+pipelineCols, p.ID, p.Name, p.Repository, p.Definition, ts(now), ts(now)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "pipeline", out.ID, "created", out)
	})
	return out, err
}

func (t pipelines) Get(ctx context.Context, id string) (p store.Pipeline, err error) {
	err = t.read(func(q querier) error {
		p, err = scanPipeline(q.QueryRowContext(ctx, `SELECT `+pipelineCols+` FROM pipelines WHERE id = ?`, id))
		return err
	})
	return p, err
}

func (t pipelines) GetByName(ctx context.Context, name string) (p store.Pipeline, err error) {
	err = t.read(func(q querier) error {
		p, err = scanPipeline(q.QueryRowContext(ctx, `SELECT `+pipelineCols+` FROM pipelines WHERE name = ?`, name))
		return err
	})
	return p, err
}

func (t pipelines) List(ctx context.Context) (ps []store.Pipeline, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+pipelineCols+` FROM pipelines ORDER BY name`)
		ps, err = all(rows, err, scanPipeline)
		return err
	})
	return ps, err
}

func (t pipelines) Update(ctx context.Context, p store.Pipeline) (store.Pipeline, error) {
	if p.Name == "" {
		return p, fmt.Errorf("%w: pipeline without a name", store.ErrInvalid)
	}
	var out store.Pipeline
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanPipeline(q.QueryRowContext(ctx, `UPDATE pipelines SET name = ?, repository = ?, definition = ?, updated_at = ?
			WHERE id = ? RETURNING `+pipelineCols, p.Name, p.Repository, p.Definition, ts(now), p.ID))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "pipeline", out.ID, "updated", out)
	})
	return out, err
}

func (t pipelines) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		p, err := scanPipeline(q.QueryRowContext(ctx, `DELETE FROM pipelines WHERE id = ? RETURNING `+pipelineCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "pipeline", p.ID, "deleted", p)
	})
}

type runs struct{ *conn }

const runCols = `id, pipeline_id, run_number, status, trigger, git_ref, git_sha, created_at, started_at, finished_at`

func scanRun(r scanner) (store.Run, error) {
	var x store.Run
	err := r.Scan(&x.ID, &x.PipelineID, &x.Number, &x.Status, rawCol{&x.Trigger}, &x.GitRef, &x.GitSHA,
		timeCol{&x.CreatedAt}, nullTimeCol{&x.StartedAt}, nullTimeCol{&x.FinishedAt})
	return x, err
}

// stamps returns the started_at and finished_at of a row created with a
// status: now when it is running (started) or done (finished).
func stamps(running, done bool, now time.Time) (started, finished any) {
	if running {
		started = ts(now)
	}
	if done {
		finished = ts(now)
	}
	return started, finished
}

func (t runs) Create(ctx context.Context, r store.Run) (store.Run, error) {
	if r.Status == "" {
		r.Status = store.RunQueued
	}
	if !r.Status.Valid() {
		return r, fmt.Errorf("%w: run status %q", store.ErrInvalid, r.Status)
	}
	if r.ID == "" {
		r.ID = store.NewID()
	}
	var out store.Run
	err := t.write(ctx, func(q querier, now time.Time) error {
		var number int
		err := q.QueryRowContext(ctx, `UPDATE pipelines SET last_run_number = last_run_number + 1 WHERE id = ?
			RETURNING last_run_number`, r.PipelineID).Scan(&number)
		if err != nil {
			return err
		}
		started, finished := stamps(r.Status == store.RunRunning, r.Status.Done(), now)
		out, err = scanRun(q.QueryRowContext(ctx, `INSERT INTO runs (id, pipeline_id, run_number, status, trigger, git_ref, git_sha,
				created_at, started_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+runCols,
			r.ID, r.PipelineID, number, r.Status, jsonArg(r.Trigger), r.GitRef, r.GitSHA, ts(now), started, finished))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "run", out.ID, string(out.Status), out)
	})
	return out, err
}

func (t runs) Get(ctx context.Context, id string) (r store.Run, err error) {
	err = t.read(func(q querier) error {
		r, err = scanRun(q.QueryRowContext(ctx, `SELECT `+runCols+` FROM runs WHERE id = ?`, id))
		return err
	})
	return r, err
}

func (t runs) Lock(ctx context.Context, id string) (store.Run, error) {
	return t.Get(ctx, id) // write transactions are serialized already
}

func (t runs) GetByNumber(ctx context.Context, pipelineID string, number int) (r store.Run, err error) {
	err = t.read(func(q querier) error {
		r, err = scanRun(q.QueryRowContext(ctx, `SELECT `+runCols+` FROM runs WHERE pipeline_id = ? AND run_number = ?`, pipelineID, number))
		return err
	})
	return r, err
}

func (t runs) List(ctx context.Context, f store.RunFilter) (rs []store.Run, err error) {
	var s sel
	order := `created_at DESC, id`
	if f.PipelineID != "" {
		s.cond(`pipeline_id = ?`, f.PipelineID)
		order = `run_number DESC`
	}
	if f.Status != "" {
		s.cond(`status = ?`, f.Status)
	}
	query := s.sql(`SELECT `+runCols+` FROM runs`, order, f.Limit, f.Offset)
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, query, s.args...)
		rs, err = all(rows, err, scanRun)
		return err
	})
	return rs, err
}

// setStatus is the SET clause of a status change, with parameters status,
// running, now, done, now.
const setStatus = `status = ?,
	started_at = CASE WHEN ? THEN coalesce(started_at, ?) ELSE started_at END,
	finished_at = CASE WHEN ? THEN ? END`

func (t runs) SetStatus(ctx context.Context, id string, status store.RunStatus) (store.Run, error) {
	if !status.Valid() {
		return store.Run{}, fmt.Errorf("%w: run status %q", store.ErrInvalid, status)
	}
	var out store.Run
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanRun(q.QueryRowContext(ctx, `UPDATE runs SET `+setStatus+`
			WHERE id = ? AND status NOT IN ('success', 'failure', 'cancelled', 'timeout') RETURNING `+runCols,
			status, status == store.RunRunning, ts(now), status.Done(), ts(now), id))
		if errors.Is(err, sql.ErrNoRows) {
			return missing(ctx, q, "runs", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "run", out.ID, string(out.Status), out)
	})
	return out, err
}

type stages struct{ *conn }

const stageCols = `id, run_id, idx, name, matrix, status, created_at, started_at, finished_at`

func scanStage(r scanner) (store.Stage, error) {
	var s store.Stage
	err := r.Scan(&s.ID, &s.RunID, &s.Index, &s.Name, rawCol{&s.Matrix}, &s.Status,
		timeCol{&s.CreatedAt}, nullTimeCol{&s.StartedAt}, nullTimeCol{&s.FinishedAt})
	return s, err
}

func (t stages) Create(ctx context.Context, in ...store.Stage) ([]store.Stage, error) {
	for i := range in {
		if in[i].Status == "" {
			in[i].Status = store.StatusPending
		}
		if !in[i].Status.Valid() {
			return nil, fmt.Errorf("%w: stage status %q", store.ErrInvalid, in[i].Status)
		}
		if in[i].ID == "" {
			in[i].ID = store.NewID()
		}
	}
	out := make([]store.Stage, 0, len(in))
	err := t.write(ctx, func(q querier, now time.Time) error {
		for _, s := range in {
			started, finished := stamps(s.Status == store.StatusRunning, s.Status.Done(), now)
			st, err := scanStage(q.QueryRowContext(ctx, `INSERT INTO stages (id, run_id, idx, name, matrix, status, created_at, started_at, finished_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+stageCols,
				s.ID, s.RunID, s.Index, s.Name, jsonArg(s.Matrix), s.Status, ts(now), started, finished))
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return emitRows(ctx, q, now, "stage", out, func(s store.Stage) string { return s.ID }, func(s store.Stage) string { return string(s.Status) })
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t stages) Get(ctx context.Context, id string) (s store.Stage, err error) {
	err = t.read(func(q querier) error {
		s, err = scanStage(q.QueryRowContext(ctx, `SELECT `+stageCols+` FROM stages WHERE id = ?`, id))
		return err
	})
	return s, err
}

func (t stages) List(ctx context.Context, runID string) (ss []store.Stage, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+stageCols+` FROM stages WHERE run_id = ? ORDER BY idx`, runID)
		ss, err = all(rows, err, scanStage)
		return err
	})
	return ss, err
}

func (t stages) SetStatus(ctx context.Context, id string, status store.Status) (store.Stage, error) {
	if !status.Valid() {
		return store.Stage{}, fmt.Errorf("%w: stage status %q", store.ErrInvalid, status)
	}
	var out store.Stage
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanStage(q.QueryRowContext(ctx, `UPDATE stages SET `+setStatus+`
			WHERE id = ? AND status NOT IN ('success', 'failure', 'skipped', 'cancelled', 'timeout') RETURNING `+stageCols,
			status, status == store.StatusRunning, ts(now), status.Done(), ts(now), id))
		if errors.Is(err, sql.ErrNoRows) {
			return missing(ctx, q, "stages", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "stage", out.ID, string(out.Status), out)
	})
	return out, err
}

type steps struct{ *conn }

const stepCols = `id, job_id, idx, name, key, status, exit_code, outputs, created_at, started_at, finished_at`

func scanStep(r scanner) (store.Step, error) {
	var s store.Step
	err := r.Scan(&s.ID, &s.JobID, &s.Index, &s.Name, &s.Key, &s.Status, &s.ExitCode, jsonCol{&s.Outputs},
		timeCol{&s.CreatedAt}, nullTimeCol{&s.StartedAt}, nullTimeCol{&s.FinishedAt})
	return s, err
}

// outputsArg encodes step outputs: NULL when there are none.
func outputsArg(m map[string]string) any {
	if len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m) // a map of strings always encodes
	return string(b)
}

func (t steps) Create(ctx context.Context, in ...store.Step) ([]store.Step, error) {
	for i := range in {
		if in[i].Status == "" {
			in[i].Status = store.StatusPending
		}
		if !in[i].Status.Valid() {
			return nil, fmt.Errorf("%w: step status %q", store.ErrInvalid, in[i].Status)
		}
		if in[i].ID == "" {
			in[i].ID = store.NewID()
		}
	}
	out := make([]store.Step, 0, len(in))
	err := t.write(ctx, func(q querier, now time.Time) error {
		for _, s := range in {
			started, finished := stamps(s.Status == store.StatusRunning, s.Status.Done(), now)
			st, err := scanStep(q.QueryRowContext(ctx, `INSERT INTO steps (id, job_id, idx, name, key, status, exit_code, outputs,
					created_at, started_at, finished_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+stepCols,
				s.ID, s.JobID, s.Index, s.Name, s.Key, s.Status, s.ExitCode, outputsArg(s.Outputs), ts(now), started, finished))
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return emitRows(ctx, q, now, "step", out, func(s store.Step) string { return s.ID }, func(s store.Step) string { return string(s.Status) })
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t steps) Get(ctx context.Context, id string) (s store.Step, err error) {
	err = t.read(func(q querier) error {
		s, err = scanStep(q.QueryRowContext(ctx, `SELECT `+stepCols+` FROM steps WHERE id = ?`, id))
		return err
	})
	return s, err
}

func (t steps) List(ctx context.Context, jobID string) (ss []store.Step, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+stepCols+` FROM steps WHERE job_id = ? ORDER BY idx`, jobID)
		ss, err = all(rows, err, scanStep)
		return err
	})
	return ss, err
}

func (t steps) Update(ctx context.Context, id string, u store.StepUpdate) (store.Step, error) {
	if !u.Status.Valid() {
		return store.Step{}, fmt.Errorf("%w: step status %q", store.ErrInvalid, u.Status)
	}
	var out store.Step
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanStep(q.QueryRowContext(ctx, `UPDATE steps SET `+setStatus+`,
				exit_code = coalesce(?, exit_code), outputs = coalesce(?, outputs)
			WHERE id = ? AND status NOT IN ('success', 'failure', 'skipped', 'cancelled', 'timeout') RETURNING `+stepCols,
			u.Status, u.Status == store.StatusRunning, ts(now), u.Status.Done(), ts(now), u.ExitCode, outputsArg(u.Outputs), id))
		if errors.Is(err, sql.ErrNoRows) {
			return missing(ctx, q, "steps", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "step", out.ID, string(out.Status), out)
	})
	return out, err
}

type templates struct{ *conn }

const templateCols = `id, name, description, version, spec, parameters, created_at, updated_at`

func scanTemplate(r scanner) (store.Template, error) {
	var t store.Template
	err := r.Scan(&t.ID, &t.Name, &t.Description, &t.Version, rawCol{&t.Spec}, rawCol{&t.Parameters},
		timeCol{&t.CreatedAt}, timeCol{&t.UpdatedAt})
	return t, err
}

func (t templates) Create(ctx context.Context, tpl store.Template) (store.Template, error) {
	if tpl.Name == "" {
		return tpl, fmt.Errorf("%w: template without a name", store.ErrInvalid)
	}
	if tpl.ID == "" {
		tpl.ID = store.NewID()
	}
	var out store.Template
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanTemplate(q.QueryRowContext(ctx, `INSERT INTO templates (id, name, description, version, spec, parameters, created_at, updated_at)
			VALUES (?, ?, ?, 1, ?, ?, ?, ?) RETURNING `+templateCols,
			tpl.ID, tpl.Name, tpl.Description, jsonArg(tpl.Spec), jsonArg(tpl.Parameters), ts(now), ts(now)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "template", out.ID, "created", out)
	})
	return out, err
}

func (t templates) Get(ctx context.Context, id string) (tpl store.Template, err error) {
	err = t.read(func(q querier) error {
		tpl, err = scanTemplate(q.QueryRowContext(ctx, `SELECT `+templateCols+` FROM templates WHERE id = ?`, id))
		return err
	})
	return tpl, err
}

func (t templates) GetByName(ctx context.Context, name string) (tpl store.Template, err error) {
	err = t.read(func(q querier) error {
		tpl, err = scanTemplate(q.QueryRowContext(ctx, `SELECT `+templateCols+` FROM templates WHERE name = ?`, name))
		return err
	})
	return tpl, err
}

func (t templates) List(ctx context.Context) (tpls []store.Template, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+templateCols+` FROM templates ORDER BY name`)
		tpls, err = all(rows, err, scanTemplate)
		return err
	})
	return tpls, err
}

func (t templates) Update(ctx context.Context, tpl store.Template) (store.Template, error) {
	if tpl.Name == "" {
		return tpl, fmt.Errorf("%w: template without a name", store.ErrInvalid)
	}
	var out store.Template
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanTemplate(q.QueryRowContext(ctx, `UPDATE templates SET name = ?, description = ?, spec = ?, parameters = ?,
				version = version + 1, updated_at = ?
			WHERE id = ? RETURNING `+templateCols, tpl.Name, tpl.Description, jsonArg(tpl.Spec), jsonArg(tpl.Parameters), ts(now), tpl.ID))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "template", out.ID, "updated", out)
	})
	return out, err
}

func (t templates) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		tpl, err := scanTemplate(q.QueryRowContext(ctx, `DELETE FROM templates WHERE id = ? RETURNING `+templateCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "template", tpl.ID, "deleted", tpl)
	})
}
