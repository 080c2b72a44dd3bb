package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/oxide-ci/oxide/internal/store"
)

// Page sizes of lists and logs.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// list is the JSON of a page of a list.
type list[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// pageParams reads ?limit= (default 50, at most 500) and ?cursor=, an
// offset cursor.
func pageParams(r *http.Request) (limit, offset int, err error) {
	if limit, err = limitParam(r); err != nil {
		return 0, 0, err
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		v, ok := decodeCursor(c, "o")
		if ok {
			offset, err = strconv.Atoi(v)
		}
		if !ok || err != nil || offset < 0 {
			return 0, 0, invalidf("cursor %q is not one this list gave", c)
		}
	}
	return limit, offset, nil
}

func limitParam(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, invalidf("limit %q is not a positive integer", s)
	}
	return min(n, maxLimit), nil
}

// paginate returns the page of all at offset and the cursor of the next.
func paginate[T any](all []T, limit, offset int) ([]T, string) {
	if offset >= len(all) {
		return []T{}, ""
	}
	end := min(offset+limit, len(all))
	next := ""
	if end < len(all) {
		next = offsetCursor(end)
	}
	return all[offset:end], next
}

func offsetCursor(offset int) string { return encodeCursor("o", strconv.Itoa(offset)) }

// Cursors are opaque to clients: base64url of "KIND:VALUE".
func encodeCursor(kind, v string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + v))
}

func decodeCursor(c, kind string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	return strings.CutPrefix(string(b), kind+":")
}

// mapItems converts rows to their JSON, never nil (a list answers []).
func mapItems[R, T any](rows []R, f func(R) T) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = f(r)
	}
	return out
}

// auditEntry is an audit log entry about to be written.
type auditEntry struct {
	action, resourceType, resourceID string
	details                          any // encoded as JSON; never secret values
}

// record appends the audit entry of a mutating call by p through tx (the
// store, or a transaction that makes the change too).
func record(ctx context.Context, tx store.Tx, p *principal, e auditEntry) error {
	se, err := e.by(p)
	if err != nil {
		return err
	}
	_, err = tx.Audit().Record(ctx, se)
	return err
}

// by returns e as the store's entry of a change by p.
func (e auditEntry) by(p *principal) (store.AuditEntry, error) {
	var details json.RawMessage
	if e.details != nil {
		b, err := json.Marshal(e.details)
		if err != nil {
			return store.AuditEntry{}, err
		}
		details = b
	}
	return store.AuditEntry{
		Actor: p.Name, Action: e.action, ResourceType: e.resourceType, ResourceID: e.resourceID, Details: details,
	}, nil
}

// audit records e after a change made elsewhere (by a token store that is
// not an AuditedTokenStore, or a template's job by Control), even if the
// client has gone; a failure is logged, since the change is made.
func (s *Server) audit(ctx context.Context, p *principal, e auditEntry) {
	ctx = context.WithoutCancel(ctx)
	if err := record(ctx, s.store, p, e); err != nil {
		s.log.ErrorContext(ctx, "cannot write audit entry", "action", e.action, "resource_id", e.resourceID,
			"actor", p.Name, "request_id", requestIDFrom(ctx), "err", err)
	}
}
