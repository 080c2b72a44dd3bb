package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

// Error codes of docs/api.md.
const (
	codeUnauthorized     = "unauthorized"
	codeForbidden        = "forbidden"
	codeNotFound         = "not_found"
	codeConflict         = "conflict"
	codeInvalidRequest   = "invalid_request"
	codeInvalidPipeline  = "invalid_pipeline"
	codeTooLarge         = "too_large"
	codeMethodNotAllowed = "method_not_allowed"
	codeInternal         = "internal"
	codeUnavailable      = "unavailable"
)

// apiError is an error with its HTTP answer.
type apiError struct {
	status  int
	code    string
	msg     string
	details []string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// invalidf is a 400 invalid_request.
func invalidf(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, codeInvalidRequest, format, args...)
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details,omitempty"`
}

// writeError answers err. It is the one place where errors become HTTP
// statuses: the store's sentinels (wrapped by the store or by Control), the
// scheduler's ErrNotApprover, pipeline and job spec validation errors, body
// limits, and errors that handlers made with errorf.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		ae   *apiError
		mbe  *http.MaxBytesError
		perr pipeline.ErrorList
		verr *jobspec.ValidationError
		derr *store.DriverError
	)
	if errors.As(err, &derr) {
		// The answer names the sentinel only: the database's words are logged.
		s.log.InfoContext(r.Context(), "the database refused a change", "request_id", requestIDFrom(r.Context()), "err", derr.Err)
	}
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &mbe):
		ae = errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body larger than %d bytes", mbe.Limit)
	case errors.As(err, &perr):
		ae = &apiError{status: http.StatusBadRequest, code: codeInvalidPipeline, msg: "pipeline definition is invalid"}
		for _, e := range perr {
			ae.details = append(ae.details, e.Error())
		}
	case errors.As(err, &verr):
		// A handler says what was invalid by wrapping: "invalid template
		// parameters: %w".
		msg := strings.TrimSuffix(strings.TrimSuffix(err.Error(), verr.Error()), ": ")
		if msg == "" {
			msg = "invalid job spec"
		}
		ae = &apiError{status: http.StatusBadRequest, code: codeInvalidRequest, msg: msg, details: verr.Problems}
	case errors.Is(err, scheduler.ErrNotApprover):
		ae = errorf(http.StatusForbidden, codeForbidden, "%s", clean(err))
	case errors.Is(err, store.ErrNotFound):
		ae = errorf(http.StatusNotFound, codeNotFound, "%s", clean(err))
	case errors.Is(err, store.ErrConflict):
		ae = errorf(http.StatusConflict, codeConflict, "%s", clean(err))
	case errors.Is(err, store.ErrInvalid):
		ae = errorf(http.StatusBadRequest, codeInvalidRequest, "%s", clean(err))
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The client went away: nobody reads an answer.
		s.log.DebugContext(r.Context(), "request cancelled", "request_id", requestIDFrom(r.Context()), "err", err)
		return
	default:
		s.log.ErrorContext(r.Context(), "internal error", "request_id", requestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path, "err", err)
		ae = errorf(http.StatusInternalServerError, codeInternal, "internal error (request %s)", requestIDFrom(r.Context()))
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="oxide"`)
	}
	writeJSON(w, ae.status, errorBody{errorJSON{Code: ae.code, Message: ae.msg, Details: ae.details}})
}

// clean makes a store error readable: "pipeline "x": store: not found"
// becomes "pipeline "x": not found".
func clean(err error) string {
	return strings.ReplaceAll(err.Error(), "store: ", "")
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"cannot encode the answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// decode reads the request body as one JSON value into v: unknown fields,
// malformed JSON and trailing data are invalid_request, a body over the
// limit too_large.
func decode(r *http.Request, v any) error {
	err := decodeBody(r, v)
	if errors.Is(err, io.EOF) {
		return invalidf("the request needs a JSON body")
	}
	return err
}

// decodeOptional is decode for a body that may be empty.
func decodeOptional(r *http.Request, v any) error {
	if err := decodeBody(r, v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func decodeBody(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil || len(b) == 0 {
		return cmp.Or(err, io.EOF)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return err
		}
		return invalidf("request body: data after the JSON value")
	}
	return nil
}

// readBody reads the request body (which limitBody caps) and refuses a
// NUL in any of its JSON strings: no store keeps one alike.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, jsonError(err)
	}
	if hasNUL(b) {
		return nil, invalidf("request body: a string holds a NUL byte (\\u0000)")
	}
	return b, nil
}

// jsonError maps an encoding/json error to invalid_request, naming the
// field; io.EOF (no body) and *http.MaxBytesError pass through.
func jsonError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF), errors.As(err, &mbe):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidf("request body: truncated JSON")
	case errors.As(err, &se):
		return invalidf("request body: malformed JSON at offset %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field == "" {
			return invalidf("request body: want a JSON object, got %s", te.Value)
		}
		return invalidf("request body: field %q: got a JSON %s, want %s", te.Field, te.Value, te.Type)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return invalidf("request body: unknown field %s", f)
	}
	return invalidf("request body: %v", strings.TrimPrefix(err.Error(), "json: "))
}
