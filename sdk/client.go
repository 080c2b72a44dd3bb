// Package sdk is a Go client of the Oxide REST API (docs/api.md): pipelines,
// runs and their logs, jobs and templates, agents, elastic workers and their
// providers, secrets, tokens and the audit log, and the WebSocket event
// stream.
//
// Every method takes a context first and returns an *Error for an answer
// with a 4xx or 5xx status; errors.Is matches it against ErrUnauthorized,
// ErrForbidden, ErrNotFound, ErrConflict and ErrInvalid.
//
//	c := sdk.New("http://localhost:8080", os.Getenv("OXIDE_TOKEN"))
//	run, err := c.TriggerRun(ctx, "build", sdk.TriggerRequest{Branch: "main"})
//	if err != nil { … }
//	run, err = c.FollowLogs(ctx, run.ID, func(l sdk.LogLine) { fmt.Println(l.Text) })
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// APIPath is the path of the API below the server's URL.
const APIPath = "/api/v1"

// Client calls one Oxide server. It is safe for concurrent use.
type Client struct {
	base  string // the server's URL with APIPath, without a trailing slash
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc instead of a
// client with a 60-second timeout.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// New returns a client of the server at baseURL ("https://oxide.example.com";
// a URL that already ends in /api/v1 is accepted too) that authenticates with
// token. An empty token sends no Authorization header: only Health and Ready
// answer then.
func New(baseURL, token string, opts ...Option) *Client {
	base := strings.TrimRight(baseURL, "/")
	if !strings.HasSuffix(base, APIPath) {
		base += APIPath
	}
	c := &Client{base: base, token: token, hc: &http.Client{Timeout: 60 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Sentinel errors that an *Error matches with errors.Is, by its status.
var (
	ErrInvalid      = errors.New("invalid request")        // 400: invalid_request, invalid_pipeline
	ErrUnauthorized = errors.New("unauthorized")           // 401: missing or unknown token
	ErrForbidden    = errors.New("forbidden")              // 403: the token's role may not do this
	ErrNotFound     = errors.New("not found")              // 404
	ErrConflict     = errors.New("conflict")               // 409: name taken, run already done, …
	ErrTooLarge     = errors.New("request body too large") // 413
)

// Error is an error answer of the API:
//
//	{"error": {"code": "invalid_pipeline", "message": "…", "details": ["pipeline.yaml:3:5: …"]}}
type Error struct {
	Status  int      // the HTTP status
	Code    string   // stable: unauthorized, forbidden, not_found, conflict, invalid_request, invalid_pipeline, too_large, method_not_allowed, internal
	Message string   // for people
	Details []string // for invalid_pipeline, every FILE:LINE:COL: message
}

func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = strconv.Itoa(e.Status)
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := msg + " (" + code + ")"
	if len(e.Details) > 0 {
		s += ":\n  " + strings.Join(e.Details, "\n  ")
	}
	return s
}

// Is reports whether target is the sentinel error of e's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Status == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge
	}
	return false
}

// Page is one page of a list: Next is the cursor of the next page, empty on
// the last one.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// ListOptions selects a page of a list: Cursor is a previous page's Next,
// Limit the most items to return (0: the server's default, 50; at most 500).
type ListOptions struct {
	Cursor string
	Limit  int
}

func (o ListOptions) values() url.Values {
	q := url.Values{}
	set(q, "cursor", o.Cursor)
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	return q
}

// All calls list with each page's cursor in turn, from the first page, and
// returns every item. Stop early by cancelling ctx.
func All[T any](ctx context.Context, list func(ctx context.Context, cursor string) (Page[T], error)) ([]T, error) {
	var all []T
	cursor := ""
	for {
		p, err := list(ctx, cursor)
		if err != nil {
			return all, err
		}
		all = append(all, p.Items...)
		if p.Next == "" || p.Next == cursor {
			return all, nil
		}
		cursor = p.Next
	}
}

// set sets q's key to v unless v is empty.
func set(q url.Values, key, v string) {
	if v != "" {
		q.Set(key, v)
	}
}

// path joins escaped segments: path("runs", id, "cancel") is /runs/ID/cancel.
func path(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// do sends a request with in as its JSON body (unless nil) and decodes a 2xx
// answer's JSON body into out (unless nil or the answer has no body).
func (c *Client) do(ctx context.Context, method, p string, query url.Values, in, out any) error {
	u := c.base + p
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("oxide: encode %s %s: %w", method, p, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("oxide: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err // *url.Error names the method and URL
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return parseError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // a 2xx without a body
		}
		return fmt.Errorf("oxide: decode the answer to %s %s: %w", method, p, err)
	}
	return nil
}

// parseError reads an error answer. A body that is not the API's error
// envelope (a proxy's HTML page) becomes the Message, shortened.
func parseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var env struct {
		Error *struct {
			Code    string   `json:"code"`
			Message string   `json:"message"`
			Details []string `json:"details"`
		} `json:"error"`
	}
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		e.Code, e.Message, e.Details = env.Error.Code, env.Error.Message, env.Error.Details
		return e
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}
