package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// each runs a prepared statement once per element of xs: SQLite would spend
// more time parsing the statement again than running it.
func each[T any](ctx context.Context, q querier, query string, xs []T, args func(T) []any) error {
	if len(xs) == 0 {
		return nil
	}
	st, err := q.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, x := range xs {
		if _, err := st.ExecContext(ctx, args(x)...); err != nil {
			return err
		}
	}
	return nil
}

// timeFormat stores times as sortable text.
const timeFormat = "2006-01-02T15:04:05.000000Z"

// now is the current time as the store keeps it.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func ts(t time.Time) string { return t.UTC().Format(timeFormat) }

// tsOrNull is a nullable time column's parameter.
func tsOrNull(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ts(*t)
}

// timeCol scans a NOT NULL time column.
type timeCol struct{ p *time.Time }

func (c timeCol) Scan(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("time column holds %T", v)
	}
	t, err := time.Parse(timeFormat, s)
	*c.p = t
	return err
}

// nullTimeCol scans a nullable time column.
type nullTimeCol struct{ p **time.Time }

func (c nullTimeCol) Scan(v any) error {
	if v == nil {
		*c.p = nil
		return nil
	}
	var t time.Time
	if err := (timeCol{&t}).Scan(v); err != nil {
		return err
	}
	*c.p = &t
	return nil
}

// rawCol scans a nullable JSON column as it is.
type rawCol struct{ p *json.RawMessage }

func (c rawCol) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*c.p = nil
	case string:
		*c.p = json.RawMessage(v)
	case []byte:
		*c.p = append(json.RawMessage(nil), v...)
	default:
		return fmt.Errorf("JSON column holds %T", v)
	}
	return nil
}

// jsonCol scans a nullable JSON column into v.
type jsonCol struct{ v any }

func (c jsonCol) Scan(v any) error {
	var raw json.RawMessage
	if err := (rawCol{&raw}).Scan(v); err != nil || raw == nil {
		return err
	}
	return json.Unmarshal(raw, c.v)
}

// jsonArg is a nullable JSON column's parameter.
func jsonArg(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// labelsArg encodes labels as a JSON array.
func labelsArg(labels []string) string {
	if len(labels) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(labels) // strings always encode
	return string(b)
}

// idsArg encodes IDs as a JSON array, for "IN (SELECT value FROM json_each(?))".
func idsArg(ids []string) string { return labelsArg(ids) }

// orNull returns nil for "" (a NULL reference), else s.
func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// all scans every row with scan.
func all[T any](rows *sql.Rows, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// emit appends events to the outbox.
func emit(ctx context.Context, q querier, at time.Time, evs ...store.Event) error {
	return each(ctx, q, `INSERT INTO outbox (id, type, aggregate, aggregate_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)`, evs,
		func(e store.Event) []any {
			return []any{e.ID, e.Type, e.Aggregate, e.AggregateID, string(e.Payload), ts(at)}
		})
}

// emitRows appends one event per row: aggregate.<typ(row)>, keyed by id(row).
func emitRows[T any](ctx context.Context, q querier, at time.Time, aggregate string, rows []T, id func(T) string, typ func(T) string) error {
	evs := make([]store.Event, len(rows))
	for i, r := range rows {
		ev, err := store.NewEvent(aggregate, id(r), aggregate+"."+typ(r), r)
		if err != nil {
			return err
		}
		evs[i] = ev
	}
	return emit(ctx, q, at, evs...)
}

// emitOne appends the event aggregate.typ about row.
func emitOne(ctx context.Context, q querier, at time.Time, aggregate, id, typ string, row any) error {
	ev, err := store.NewEvent(aggregate, id, aggregate+"."+typ, row)
	if err != nil {
		return err
	}
	return emit(ctx, q, at, ev)
}

// sel builds a SELECT from optional conditions.
type sel struct {
	where []string
	args  []any
}

// cond adds a condition; its "?" stands for arg.
func (s *sel) cond(expr string, arg any) {
	s.where = append(s.where, expr)
	s.args = append(s.args, arg)
}

// sql returns head with the conditions, order, limit and offset (0: none).
func (s *sel) sql(head, order string, limit, offset int) string {
	var b strings.Builder
	b.WriteString(head)
	if len(s.where) > 0 {
		b.WriteString(" WHERE " + strings.Join(s.where, " AND "))
	}
	b.WriteString(" ORDER BY " + order)
	if limit > 0 || offset > 0 {
		s.args = append(s.args, limitArg(limit), offset)
		b.WriteString(" LIMIT ? OFFSET ?")
	}
	return b.String()
}

// limitArg is a LIMIT parameter: -1 (all) for 0.
func limitArg(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
