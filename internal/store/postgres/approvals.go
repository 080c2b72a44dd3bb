package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

type approvals struct{ *conn }

const gateCols = `stage_id, run_id, stage_name, required, approvers, status, created_at, expires_at, closed_at`

func scanGate(r pgx.Row) (store.ApprovalGate, error) {
	var g store.ApprovalGate
	err := r.Scan(&g.StageID, &g.RunID, &g.StageName, &g.Required, &g.Approvers, &g.Status, &g.CreatedAt, &g.ExpiresAt, &g.ClosedAt)
	g.Approvers = nilIfEmpty(g.Approvers)
	return g, err
}

func scanVote(r pgx.Row) (store.Vote, error) {
	var v store.Vote
	err := r.Scan(&v.StageID, &v.User, &v.Decision, &v.Comment, &v.CreatedAt)
	return v, err
}

// withVotes reads the votes of gates.
func withVotes(ctx context.Context, q querier, gates []store.ApprovalGate) error {
	for i := range gates {
		rows, err := q.Query(ctx, `SELECT stage_id, user_id, decision, comment, created_at FROM approvals
			WHERE stage_id = $1 ORDER BY seq`, gates[i].StageID)
		if gates[i].Votes, err = all(rows, err, scanVote); err != nil {
			return err
		}
		if len(gates[i].Votes) == 0 {
			gates[i].Votes = nil
		}
	}
	return nil
}

// gate reads one gate with its votes.
func gate(ctx context.Context, q querier, stageID string) (store.ApprovalGate, error) {
	g, err := scanGate(q.QueryRow(ctx, `SELECT `+gateCols+` FROM approval_gates WHERE stage_id = $1`, stageID))
	if err != nil {
		return g, err
	}
	gs := []store.ApprovalGate{g}
	err = withVotes(ctx, q, gs)
	return gs[0], err
}

func (t approvals) Open(ctx context.Context, g store.ApprovalGate, timeout time.Duration) (store.ApprovalGate, error) {
	if g.Required < 1 || timeout < 0 {
		return g, fmt.Errorf("%w: an approval gate needs at least one approval and no negative timeout", store.ErrInvalid)
	}
	var out store.ApprovalGate
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanGate(q.QueryRow(ctx, `INSERT INTO approval_gates (`+gateCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, now(), CASE WHEN $7::bigint > 0 THEN now() + $7::bigint * interval '1 microsecond' END, NULL)
			RETURNING `+gateCols,
			g.StageID, g.RunID, g.StageName, g.Required, nonNil(g.Approvers), string(store.ApprovalPending), timeout.Microseconds()))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "approval_gate", out.StageID, string(out.Status), out)
	})
	return out, err
}

func (t approvals) Get(ctx context.Context, stageID string) (g store.ApprovalGate, err error) {
	err = t.read(ctx, func(q querier) error {
		g, err = gate(ctx, q, stageID)
		return err
	})
	return g, err
}

func (t approvals) List(ctx context.Context, runID string) (gs []store.ApprovalGate, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+gateCols+` FROM approval_gates WHERE run_id = $1 ORDER BY created_at, stage_id`, runID)
		if gs, err = all(rows, err, scanGate); err != nil {
			return err
		}
		return withVotes(ctx, q, gs)
	})
	return gs, err
}

// Vote locks the gate, so that votes on it are counted one after another.
func (t approvals) Vote(ctx context.Context, v store.Vote) (store.ApprovalGate, error) {
	if v.User == "" || v.Decision != store.DecisionApproved && v.Decision != store.DecisionRejected {
		return store.ApprovalGate{}, fmt.Errorf("%w: a vote needs a user and a decision, approved or rejected", store.ErrInvalid)
	}
	var out store.ApprovalGate
	err := t.write(ctx, func(q querier) error {
		var status store.ApprovalStatus
		if err := q.QueryRow(ctx, `SELECT status FROM approval_gates WHERE stage_id = $1 FOR UPDATE`, v.StageID).Scan(&status); err != nil {
			return err
		}
		if status != store.ApprovalPending {
			return fmt.Errorf("%w: the approval gate of stage %s is %s", store.ErrConflict, v.StageID, status)
		}
		_, err := q.Exec(ctx, `INSERT INTO approvals (stage_id, user_id, decision, comment, created_at) VALUES ($1, $2, $3, $4, now())`,
			v.StageID, v.User, string(v.Decision), v.Comment)
		if err != nil {
			return err
		}
		if out, err = gate(ctx, q, v.StageID); err != nil {
			return err
		}
		return emitOne(ctx, q, "approval_gate", out.StageID, "vote", out)
	})
	return out, err
}

func (t approvals) SetStatus(ctx context.Context, stageID string, status store.ApprovalStatus) (store.ApprovalGate, error) {
	if status != store.ApprovalApproved && status != store.ApprovalRejected && status != store.ApprovalExpired {
		return store.ApprovalGate{}, fmt.Errorf("%w: approval gate status %q", store.ErrInvalid, status)
	}
	var out store.ApprovalGate
	err := t.write(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, `UPDATE approval_gates SET status = $1, closed_at = now() WHERE stage_id = $2 AND status = 'pending'`,
			string(status), stageID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return gateMissing(ctx, q, stageID)
		}
		if out, err = gate(ctx, q, stageID); err != nil {
			return err
		}
		return emitOne(ctx, q, "approval_gate", out.StageID, string(out.Status), out)
	})
	return out, err
}

// gateMissing explains why a gate did not change: ErrNotFound if there is
// none, else ErrConflict.
func gateMissing(ctx context.Context, q querier, stageID string) error {
	var status store.ApprovalStatus
	err := q.QueryRow(ctx, `SELECT status FROM approval_gates WHERE stage_id = $1`, stageID).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: the approval gate of stage %s is %s", store.ErrConflict, stageID, status)
}

func (t approvals) Expired(ctx context.Context, at time.Time) (gs []store.ApprovalGate, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT g.stage_id, g.run_id, g.stage_name, g.required, g.approvers, g.status, g.created_at, g.expires_at, g.closed_at
			FROM approval_gates g JOIN stages s ON s.id = g.stage_id
			WHERE g.status = 'pending' AND g.expires_at <= $1 AND s.status = 'waiting' ORDER BY g.expires_at, g.stage_id`, at)
		if gs, err = all(rows, err, scanGate); err != nil {
			return err
		}
		return withVotes(ctx, q, gs)
	})
	return gs, err
}
