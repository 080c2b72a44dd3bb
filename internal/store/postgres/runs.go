package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

type pipelines struct{ *conn }

const pipelineCols = `id, name, repository, definition, created_at, updated_at`

func scanPipeline(r pgx.Row) (store.Pipeline, error) {
	var p store.Pipeline
	err := r.Scan(&p.ID, &p.Name, &p.Repository, &p.Definition, &p.CreatedAt, &p.UpdatedAt)
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
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanPipeline(q.QueryRow(ctx, `INSERT INTO pipelines (id, name, repository, definition, created_at, updated_at)
			VALUES ($1, $2, $3, $4, now(), now()) RETURNING `+pipelineCols, p.ID, p.Name, p.Repository, p.Definition))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "pipeline", out.ID, "created", out)
	})
	return out, err
}

func (t pipelines) Get(ctx context.Context, id string) (p store.Pipeline, err error) {
	err = t.read(ctx, func(q querier) error {
		p, err = scanPipeline(q.QueryRow(ctx, `SELECT `+pipelineCols+` FROM pipelines WHERE id = $1`, id))
		return err
	})
	return p, err
}

func (t pipelines) GetByName(ctx context.Context, name string) (p store.Pipeline, err error) {
	err = t.read(ctx, func(q querier) error {
		p, err = scanPipeline(q.QueryRow(ctx, `SELECT `+pipelineCols+` FROM pipelines WHERE name = $1`, name))
		return err
	})
	return p, err
}

func (t pipelines) List(ctx context.Context) (ps []store.Pipeline, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+pipelineCols+` FROM pipelines ORDER BY name`)
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
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanPipeline(q.QueryRow(ctx, `UPDATE pipelines SET name = $2, repository = $3, definition = $4, updated_at = now()
			WHERE id = $1 RETURNING `+pipelineCols, p.ID, p.Name, p.Repository, p.Definition))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "pipeline", out.ID, "updated", out)
	})
	return out, err
}

func (t pipelines) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier) error {
		p, err := scanPipeline(q.QueryRow(ctx, `DELETE FROM pipelines WHERE id = $1 RETURNING `+pipelineCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "pipeline", p.ID, "deleted", p)
	})
}

type runs struct{ *conn }

const runCols = `id, pipeline_id, run_number, status, trigger, git_ref, git_sha, created_at, started_at, finished_at`

func scanRun(r pgx.Row) (store.Run, error) {
	var x store.Run
	err := r.Scan(&x.ID, &x.PipelineID, &x.Number, &x.Status, &x.Trigger, &x.GitRef, &x.GitSHA, &x.CreatedAt, &x.StartedAt, &x.FinishedAt)
	return x, err
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
	err := t.write(ctx, func(q querier) (err error) {
		// The pipeline's row lock orders concurrent creations: each reads
		// the number its predecessor committed.
		out, err = scanRun(q.QueryRow(ctx, `WITH p AS (
				UPDATE pipelines SET last_run_number = last_run_number + 1 WHERE id = $2 RETURNING last_run_number)
			INSERT INTO runs (id, pipeline_id, run_number, status, trigger, git_ref, git_sha, created_at,
				started_at, finished_at)
			SELECT $1, $2, p.last_run_number, $3, $4, $5, $6, now(),
				CASE WHEN $7 THEN now() END, CASE WHEN $8 THEN now() END FROM p
			RETURNING `+runCols,
			r.ID, r.PipelineID, r.Status, jsonArg(r.Trigger), r.GitRef, r.GitSHA, r.Status == store.RunRunning, r.Status.Done()))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "run", out.ID, string(out.Status), out)
	})
	return out, err
}

func (t runs) Get(ctx context.Context, id string) (r store.Run, err error) {
	err = t.read(ctx, func(q querier) error {
		r, err = scanRun(q.QueryRow(ctx, `SELECT `+runCols+` FROM runs WHERE id = $1`, id))
		return err
	})
	return r, err
}

func (t runs) Lock(ctx context.Context, id string) (r store.Run, err error) {
	err = t.write(ctx, func(q querier) error {
		r, err = scanRun(q.QueryRow(ctx, `SELECT `+runCols+` FROM runs WHERE id = $1 FOR UPDATE`, id))
		return err
	})
	return r, err
}

func (t runs) GetByNumber(ctx context.Context, pipelineID string, number int) (r store.Run, err error) {
	err = t.read(ctx, func(q querier) error {
		r, err = scanRun(q.QueryRow(ctx, `SELECT `+runCols+` FROM runs WHERE pipeline_id = $1 AND run_number = $2`, pipelineID, number))
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
	sql := s.sql(`SELECT `+runCols+` FROM runs`, order, f.Limit, f.Offset)
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, sql, s.args...)
		rs, err = all(rows, err, scanRun)
		return err
	})
	return rs, err
}

func (t runs) SetStatus(ctx context.Context, id string, status store.RunStatus) (store.Run, error) {
	if !status.Valid() {
		return store.Run{}, fmt.Errorf("%w: run status %q", store.ErrInvalid, status)
	}
	var out store.Run
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanRun(q.QueryRow(ctx, `UPDATE runs SET status = $2,
				started_at = CASE WHEN $3 THEN coalesce(started_at, now()) ELSE started_at END,
				finished_at = CASE WHEN $4 THEN now() END
			WHERE id = $1 AND status NOT IN ('success', 'failure', 'cancelled', 'timeout')
			RETURNING `+runCols, id, status, status == store.RunRunning, status.Done()))
		if errors.Is(err, pgx.ErrNoRows) {
			return missing(ctx, q, "runs", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "run", out.ID, string(out.Status), out)
	})
	return out, err
}

type stages struct{ *conn }

const stageCols = `id, run_id, idx, name, matrix, status, created_at, started_at, finished_at`

func scanStage(r pgx.Row) (store.Stage, error) {
	var s store.Stage
	err := r.Scan(&s.ID, &s.RunID, &s.Index, &s.Name, &s.Matrix, &s.Status, &s.CreatedAt, &s.StartedAt, &s.FinishedAt)
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
	err := t.write(ctx, func(q querier) error {
		for _, s := range in {
			st, err := scanStage(q.QueryRow(ctx, `INSERT INTO stages (id, run_id, idx, name, matrix, status, created_at, started_at, finished_at)
				VALUES ($1, $2, $3, $4, $5, $6, now(), CASE WHEN $7 THEN now() END, CASE WHEN $8 THEN now() END)
				RETURNING `+stageCols, s.ID, s.RunID, s.Index, s.Name, jsonArg(s.Matrix), s.Status, s.Status == store.StatusRunning, s.Status.Done()))
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return emitRows(ctx, q, "stage", out, func(s store.Stage) string { return s.ID }, func(s store.Stage) string { return string(s.Status) })
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t stages) Get(ctx context.Context, id string) (s store.Stage, err error) {
	err = t.read(ctx, func(q querier) error {
		s, err = scanStage(q.QueryRow(ctx, `SELECT `+stageCols+` FROM stages WHERE id = $1`, id))
		return err
	})
	return s, err
}

func (t stages) List(ctx context.Context, runID string) (ss []store.Stage, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+stageCols+` FROM stages WHERE run_id = $1 ORDER BY idx`, runID)
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
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanStage(q.QueryRow(ctx, `UPDATE stages SET status = $2,
				started_at = CASE WHEN $3 THEN coalesce(started_at, now()) ELSE started_at END,
				finished_at = CASE WHEN $4 THEN now() END
			WHERE id = $1 AND status NOT IN ('success', 'failure', 'skipped', 'cancelled', 'timeout')
			RETURNING `+stageCols, id, status, status == store.StatusRunning, status.Done()))
		if errors.Is(err, pgx.ErrNoRows) {
			return missing(ctx, q, "stages", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "stage", out.ID, string(out.Status), out)
	})
	return out, err
}

type steps struct{ *conn }

const stepCols = `id, job_id, idx, name, key, status, exit_code, outputs, created_at, started_at, finished_at`

func scanStep(r pgx.Row) (store.Step, error) {
	var s store.Step
	var outputs []byte
	err := r.Scan(&s.ID, &s.JobID, &s.Index, &s.Name, &s.Key, &s.Status, &s.ExitCode, &outputs, &s.CreatedAt, &s.StartedAt, &s.FinishedAt)
	if err == nil && outputs != nil {
		err = json.Unmarshal(outputs, &s.Outputs)
	}
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
	err := t.write(ctx, func(q querier) error {
		for _, s := range in {
			st, err := scanStep(q.QueryRow(ctx, `INSERT INTO steps (id, job_id, idx, name, key, status, exit_code, outputs,
					created_at, started_at, finished_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), CASE WHEN $9 THEN now() END, CASE WHEN $10 THEN now() END)
				RETURNING `+stepCols, s.ID, s.JobID, s.Index, s.Name, s.Key, s.Status, s.ExitCode, outputsArg(s.Outputs),
				s.Status == store.StatusRunning, s.Status.Done()))
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return emitRows(ctx, q, "step", out, func(s store.Step) string { return s.ID }, func(s store.Step) string { return string(s.Status) })
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t steps) Get(ctx context.Context, id string) (s store.Step, err error) {
	err = t.read(ctx, func(q querier) error {
		s, err = scanStep(q.QueryRow(ctx, `SELECT `+stepCols+` FROM steps WHERE id = $1`, id))
		return err
	})
	return s, err
}

func (t steps) List(ctx context.Context, jobID string) (ss []store.Step, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+stepCols+` FROM steps WHERE job_id = $1 ORDER BY idx`, jobID)
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
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanStep(q.QueryRow(ctx, `UPDATE steps SET status = $2,
				exit_code = coalesce($3, exit_code), outputs = coalesce($4::json, outputs),
				started_at = CASE WHEN $5 THEN coalesce(started_at, now()) ELSE started_at END,
				finished_at = CASE WHEN $6 THEN now() END
			WHERE id = $1 AND status NOT IN ('success', 'failure', 'skipped', 'cancelled', 'timeout')
			RETURNING `+stepCols, id, u.Status, u.ExitCode, outputsArg(u.Outputs), u.Status == store.StatusRunning, u.Status.Done()))
		if errors.Is(err, pgx.ErrNoRows) {
			return missing(ctx, q, "steps", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "step", out.ID, string(out.Status), out)
	})
	return out, err
}

type templates struct{ *conn }

const templateCols = `id, name, description, version, spec, parameters, created_at, updated_at`

func scanTemplate(r pgx.Row) (store.Template, error) {
	var t store.Template
	err := r.Scan(&t.ID, &t.Name, &t.Description, &t.Version, &t.Spec, &t.Parameters, &t.CreatedAt, &t.UpdatedAt)
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
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanTemplate(q.QueryRow(ctx, `INSERT INTO templates (id, name, description, version, spec, parameters, created_at, updated_at)
			VALUES ($1, $2, $3, 1, $4, $5, now(), now()) RETURNING `+templateCols,
			tpl.ID, tpl.Name, tpl.Description, jsonArg(tpl.Spec), jsonArg(tpl.Parameters)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "template", out.ID, "created", out)
	})
	return out, err
}

func (t templates) Get(ctx context.Context, id string) (tpl store.Template, err error) {
	err = t.read(ctx, func(q querier) error {
		tpl, err = scanTemplate(q.QueryRow(ctx, `SELECT `+templateCols+` FROM templates WHERE id = $1`, id))
		return err
	})
	return tpl, err
}

func (t templates) GetByName(ctx context.Context, name string) (tpl store.Template, err error) {
	err = t.read(ctx, func(q querier) error {
		tpl, err = scanTemplate(q.QueryRow(ctx, `SELECT `+templateCols+` FROM templates WHERE name = $1`, name))
		return err
	})
	return tpl, err
}

func (t templates) List(ctx context.Context) (ts []store.Template, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+templateCols+` FROM templates ORDER BY name`)
		ts, err = all(rows, err, scanTemplate)
		return err
	})
	return ts, err
}

func (t templates) Update(ctx context.Context, tpl store.Template) (store.Template, error) {
	if tpl.Name == "" {
		return tpl, fmt.Errorf("%w: template without a name", store.ErrInvalid)
	}
	var out store.Template
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanTemplate(q.QueryRow(ctx, `UPDATE templates SET name = $2, description = $3, spec = $4, parameters = $5,
				version = version + 1, updated_at = now()
			WHERE id = $1 RETURNING `+templateCols, tpl.ID, tpl.Name, tpl.Description, jsonArg(tpl.Spec), jsonArg(tpl.Parameters)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "template", out.ID, "updated", out)
	})
	return out, err
}

func (t templates) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier) error {
		tpl, err := scanTemplate(q.QueryRow(ctx, `DELETE FROM templates WHERE id = $1 RETURNING `+templateCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "template", tpl.ID, "deleted", tpl)
	})
}
