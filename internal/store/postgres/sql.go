package postgres

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

// emit appends events to the outbox.
func emit(ctx context.Context, q querier, evs ...store.Event) error {
	if len(evs) == 0 {
		return nil
	}
	n := len(evs)
	ids, types, aggs, aggIDs, payloads := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, e := range evs {
		ids[i], types[i], aggs[i], aggIDs[i], payloads[i] = e.ID, e.Type, e.Aggregate, e.AggregateID, string(e.Payload)
	}
	_, err := q.Exec(ctx, `INSERT INTO outbox (id, type, aggregate, aggregate_id, payload, created_at)
		SELECT id, type, aggregate, aggregate_id, payload::json, now()
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS e (id, type, aggregate, aggregate_id, payload)`,
		ids, types, aggs, aggIDs, payloads)
	return err
}

// emitRows appends one event per row: aggregate.<typ(row)>, keyed by id(row).
func emitRows[T any](ctx context.Context, q querier, aggregate string, rows []T, id func(T) string, typ func(T) string) error {
	evs := make([]store.Event, len(rows))
	for i, r := range rows {
		ev, err := store.NewEvent(aggregate, id(r), aggregate+"."+typ(r), r)
		if err != nil {
			return err
		}
		evs[i] = ev
	}
	return emit(ctx, q, evs...)
}

// emitOne appends the event aggregate.typ about row.
func emitOne(ctx context.Context, q querier, aggregate, id, typ string, row any) error {
	ev, err := store.NewEvent(aggregate, id, aggregate+"."+typ, row)
	if err != nil {
		return err
	}
	return emit(ctx, q, ev)
}

// all scans every row with scan.
func all[T any](rows pgx.Rows, err error, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
}

// sel builds a SELECT from optional conditions.
type sel struct {
	where []string
	args  []any
}

// cond adds a condition; its "?" stands for arg.
func (s *sel) cond(expr string, arg any) {
	s.args = append(s.args, arg)
	s.where = append(s.where, strings.Replace(expr, "?", "$"+strconv.Itoa(len(s.args)), 1))
}

// sql returns head with the conditions, order, limit and offset (0: none).
func (s *sel) sql(head, order string, limit, offset int) string {
	var b strings.Builder
	b.WriteString(head)
	if len(s.where) > 0 {
		b.WriteString(" WHERE " + strings.Join(s.where, " AND "))
	}
	b.WriteString(" ORDER BY " + order)
	if limit > 0 {
		s.args = append(s.args, limit)
		b.WriteString(" LIMIT $" + strconv.Itoa(len(s.args)))
	}
	if offset > 0 {
		s.args = append(s.args, offset)
		b.WriteString(" OFFSET $" + strconv.Itoa(len(s.args)))
	}
	return b.String()
}

// orNull returns nil for "" (a NULL reference), else s.
func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// jsonArg returns a JSON document as a parameter: nil (NULL) when empty.
func jsonArg(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// nonNil returns labels, never nil (a nil slice would be NULL).
func nonNil(labels []string) []string {
	if labels == nil {
		return []string{}
	}
	return labels
}

// nilIfEmpty normalizes an empty array to nil, as rows are compared.
func nilIfEmpty(labels []string) []string {
	if len(labels) == 0 {
		return nil
	}
	return labels
}

// limitArg is a LIMIT parameter: NULL (all) for 0.
func limitArg(n int) any {
	if n <= 0 {
		return nil
	}
	return n
}
