package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type workers struct{ *conn }

const workerCols = `id, provider, state, token_id, agent_id, handle, error, isolation, deadline, created_at, updated_at`

func scanWorker(r scanner) (store.Worker, error) {
	var w store.Worker
	err := r.Scan(&w.ID, &w.Provider, &w.State, &w.TokenID, &w.AgentID, &w.Handle, &w.Error, &w.Isolation,
		timeCol{&w.Deadline}, timeCol{&w.CreatedAt}, timeCol{&w.UpdatedAt})
	return w, err
}

// workerRank orders the worker states, which never go to a lower rank; -1
// for an unknown state.
func workerRank(s store.WorkerState) int {
	switch s {
	case store.WorkerProvisioning:
		return 0
	case store.WorkerReady:
		return 1
	case store.WorkerTerminating:
		return 2
	case store.WorkerTerminated, store.WorkerFailed:
		return 3
	}
	return -1
}

// checkWorkerUpdate refuses to change a final worker or to move its state
// back.
func checkWorkerUpdate(w store.Worker, u store.WorkerUpdate) error {
	if w.State.Done() {
		return fmt.Errorf("%w: worker %s is %s", store.ErrConflict, w.ID, w.State)
	}
	if u.State != "" && workerRank(u.State) < workerRank(w.State) {
		return fmt.Errorf("%w: worker %s cannot go from %s back to %s", store.ErrConflict, w.ID, w.State, u.State)
	}
	return nil
}

func (t workers) Create(ctx context.Context, w store.Worker) (store.Worker, error) {
	if w.State == "" {
		w.State = store.WorkerProvisioning
	}
	if w.Provider == "" {
		return w, fmt.Errorf("%w: worker without a provider", store.ErrInvalid)
	}
	if workerRank(w.State) < 0 {
		return w, fmt.Errorf("%w: worker state %q", store.ErrInvalid, w.State)
	}
	if w.ID == "" {
		w.ID = store.NewID()
	}
	var out store.Worker
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanWorker(q.QueryRowContext(ctx, `INSERT INTO workers (`+workerCols+`)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) RETURNING `+workerCols,
			w.ID, w.Provider, w.State, w.TokenID, w.AgentID, w.Handle, w.Error, w.Isolation, ts(w.Deadline), ts(now)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "worker", out.ID, string(out.State), out)
	})
	return out, err
}

func (t workers) Get(ctx context.Context, id string) (w store.Worker, err error) {
	err = t.read(func(q querier) error {
		w, err = scanWorker(q.QueryRowContext(ctx, `SELECT `+workerCols+` FROM workers WHERE id = ?`, id))
		return err
	})
	return w, err
}

func (t workers) List(ctx context.Context, provider string, states ...store.WorkerState) (ws []store.Worker, err error) {
	var s sel
	if provider != "" {
		s.cond(`provider = ?`, provider)
	}
	if len(states) > 0 {
		names := make([]string, len(states))
		for i, st := range states {
			names[i] = string(st)
		}
		s.cond(`state IN (SELECT value FROM json_each(?))`, idsArg(names))
	}
	query := s.sql(`SELECT `+workerCols+` FROM workers`, `created_at, rowid`, 0, 0)
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, query, s.args...)
		ws, err = all(rows, err, scanWorker)
		return err
	})
	return ws, err
}

func (t workers) Update(ctx context.Context, id string, u store.WorkerUpdate) (store.Worker, error) {
	if u.State != "" && workerRank(u.State) < 0 {
		return store.Worker{}, fmt.Errorf("%w: worker state %q", store.ErrInvalid, u.State)
	}
	var out store.Worker
	err := t.write(ctx, func(q querier, now time.Time) error {
		w, err := scanWorker(q.QueryRowContext(ctx, `SELECT `+workerCols+` FROM workers WHERE id = ?`, id))
		if err != nil {
			return err
		}
		if err := checkWorkerUpdate(w, u); err != nil {
			return err
		}
		out, err = scanWorker(q.QueryRowContext(ctx, `UPDATE workers SET state = coalesce(nullif(?2, ''), state),
				agent_id = coalesce(nullif(?3, ''), agent_id), handle = coalesce(nullif(?4, ''), handle),
				error = coalesce(nullif(?5, ''), error), updated_at = ?6
			WHERE id = ?1 RETURNING `+workerCols, id, u.State, u.AgentID, u.Handle, u.Error, ts(now)))
		if err != nil {
			return err
		}
		typ := "updated"
		if out.State != w.State {
			typ = string(out.State)
		}
		return emitOne(ctx, q, now, "worker", out.ID, typ, out)
	})
	return out, err
}
