// Package api is the control plane's REST API and WebSocket event stream,
// as docs/api.md specifies them: pipelines, runs and their logs, jobs and
// templates of the job platform, agents, elastic workers and their
// providers, secrets, API tokens and the audit log, under /api/v1, with
// bearer-token authentication and three roles.
//
// The flow of a call is HTTP → Control (the scheduler, for anything that
// changes runs, jobs or agents) or the store (for plain definitions) →
// JSON. Store rows become API JSON at the edge, in this package only, and
// errors become HTTP statuses in one place (writeError).
package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/provider"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/store"
)

// DefaultMaxBody is the default limit of a request body: 1 MiB.
const DefaultMaxBody = 1 << 20

// Control is what the API asks of the control plane; scheduler.Service
// implements it. Every method is one use case, safe for concurrent use, and
// returns the row after the change. Errors wrap store.ErrNotFound (no such
// pipeline, run, job, agent), store.ErrConflict (the thing is done already,
// or nothing waits for an approval) or store.ErrInvalid (a request the
// control plane cannot accept; a pipeline.ErrorList may be wrapped too);
// actor is the name of the calling token, for reasons and audit: each
// method writes the audit entry of its change (run.trigger, run.cancel,
// run.approve or run.reject, job.submit, job.cancel, agent.drain) in the
// change's transaction, so that no change is made without its entry.
type Control interface {
	// TriggerRun creates a queued run of the pipeline (ID or name) with its
	// stages, jobs and steps.
	TriggerRun(ctx context.Context, pipelineID string, req scheduler.TriggerRequest) (store.Run, error)
	// CancelRun cancels a run that is not done.
	CancelRun(ctx context.Context, runID, actor string) (store.Run, error)
	// Approve records a vote on the stage of a run, by stage name, that
	// waits for an approval: scheduler.ErrNotApprover if the stage's
	// approvers do not name the voter, store.ErrConflict if the voter voted
	// on it already.
	Approve(ctx context.Context, runID, stage string, v scheduler.Vote) (store.Run, error)
	// SubmitJob queues a validated job spec as a job of its own (no run).
	// The job's Spec must be the JSON of spec: the API shows it as is.
	SubmitJob(ctx context.Context, spec jobspec.Spec, actor string) (store.Job, error)
	// SubmitJobs queues validated job specs, all or none.
	SubmitJobs(ctx context.Context, specs []jobspec.Spec, actor string) ([]store.Job, error)
	// CancelJob cancels a job that is not done.
	CancelJob(ctx context.Context, id, actor string) (store.Job, error)
	// DrainAgent lets an agent finish its jobs but claim no more.
	DrainAgent(ctx context.Context, id, actor string) (store.Agent, error)
	// WaitingReason says why a queued job waits when no connected agent
	// could ever take it; empty when one could.
	WaitingReason(ctx context.Context, j store.Job) (string, error)
}

// Config configures the API.
type Config struct {
	Store   store.Store
	Control Control
	Tokens  TokenStore
	// Secrets encrypts secret values; nil makes PUT /secrets fail.
	Secrets *secrets.Box
	// JetStream is where events are read for WebSocket clients; nil
	// disables /api/v1/ws.
	JetStream jetstream.JetStream
	// Ready reports whether the server can serve (its database and NATS
	// answer) for GET /ready; nil: always ready.
	Ready  func(ctx context.Context) error
	Logger *slog.Logger
	// MaxBody limits request bodies; 0: DefaultMaxBody.
	MaxBody int64
	// Providers are the providers of elastic workers, for GET /providers;
	// empty when there are none.
	Providers []provider.Provider
}

// Server is the API's http.Handler. Shutdown closes its WebSocket
// connections, which http.Server.Shutdown does not track.
type Server struct {
	store     store.Store
	control   Control
	tokens    TokenStore
	box       *secrets.Box
	ready     func(ctx context.Context) error
	log       *slog.Logger
	maxBody   int64
	providers []provider.Provider

	mux     *http.ServeMux
	handler http.Handler
	hub     *hub // nil without JetStream

	touchMu sync.Mutex
	touched map[string]int64 // token ID → unix seconds of the last Touch

	warnings warningMemo // of the pipelines triggered
}

// New returns the API handler.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	s := &Server{
		store:     cfg.Store,
		control:   cfg.Control,
		tokens:    cfg.Tokens,
		box:       cfg.Secrets,
		ready:     cfg.Ready,
		log:       cfg.Logger,
		maxBody:   cfg.MaxBody,
		providers: cfg.Providers,
		mux:       http.NewServeMux(),
		touched:   map[string]int64{},
	}
	if cfg.JetStream != nil {
		s.hub = newHub(cfg.JetStream, cfg.Logger)
	}
	s.routes()
	s.handler = s.requestID(s.accessLog(s.recoverPanics(s.limitBody(http.HandlerFunc(s.dispatch)))))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Shutdown closes every WebSocket connection with status 1001 (going away)
// and waits until their handlers have returned, or until ctx is done, when
// it drops the connections that are left. Call it after (or alongside)
// http.Server.Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.hub == nil {
		return nil
	}
	return s.hub.shutdown(ctx)
}

// routes registers every endpoint with the least role that may call it.
func (s *Server) routes() {
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.HandleFunc("GET /ready", s.readiness)
	s.mux.HandleFunc("GET /api/v1/health", s.health)
	s.mux.HandleFunc("GET /api/v1/ready", s.readiness)

	s.route("POST /api/v1/pipelines", RoleDeveloper, s.createPipeline)
	s.route("GET /api/v1/pipelines", RoleViewer, s.listPipelines)
	s.route("GET /api/v1/pipelines/{id}", RoleViewer, s.getPipeline)
	s.route("PUT /api/v1/pipelines/{id}", RoleDeveloper, s.updatePipeline)
	s.route("DELETE /api/v1/pipelines/{id}", RoleDeveloper, s.deletePipeline)

	s.route("POST /api/v1/pipelines/{id}/runs", RoleDeveloper, s.triggerRun)
	s.route("GET /api/v1/pipelines/{id}/runs", RoleViewer, s.listRuns)
	s.route("GET /api/v1/runs/{id}", RoleViewer, s.getRun)
	s.route("POST /api/v1/runs/{id}/cancel", RoleDeveloper, s.cancelRun)
	s.route("GET /api/v1/runs/{id}/logs", RoleViewer, s.runLogs)
	s.route("POST /api/v1/runs/{id}/stages/{stage}/approve", RoleDeveloper, s.approve(true))
	s.route("POST /api/v1/runs/{id}/stages/{stage}/reject", RoleDeveloper, s.approve(false))

	s.route("POST /api/v1/jobs", RoleDeveloper, s.submitJob)
	s.route("POST /api/v1/jobs:batch", RoleDeveloper, s.submitJobs)
	s.route("GET /api/v1/jobs", RoleViewer, s.listJobs)
	s.route("GET /api/v1/jobs/{id}", RoleViewer, s.getJob)
	s.route("POST /api/v1/jobs/{id}/cancel", RoleDeveloper, s.cancelJob)
	s.route("GET /api/v1/jobs/{id}/logs", RoleViewer, s.jobLogs)

	s.route("POST /api/v1/templates", RoleDeveloper, s.createTemplate)
	s.route("GET /api/v1/templates", RoleViewer, s.listTemplates)
	s.route("GET /api/v1/templates/{id}", RoleViewer, s.getTemplate)
	s.route("PUT /api/v1/templates/{id}", RoleDeveloper, s.updateTemplate)
	s.route("DELETE /api/v1/templates/{id}", RoleDeveloper, s.deleteTemplate)
	s.route("POST /api/v1/templates/{id}/instantiate", RoleDeveloper, s.instantiateTemplate)

	s.route("GET /api/v1/agents", RoleViewer, s.listAgents)
	s.route("POST /api/v1/agents/tokens", RoleAdmin, s.createAgentToken)
	s.route("GET /api/v1/agents/{id}", RoleViewer, s.getAgent)
	s.route("POST /api/v1/agents/{id}/drain", RoleDeveloper, s.drainAgent)
	s.route("DELETE /api/v1/agents/{id}", RoleAdmin, s.deleteAgent)

	s.route("GET /api/v1/workers", RoleViewer, s.listWorkers)
	s.route("GET /api/v1/providers", RoleViewer, s.listProviders)

	s.route("GET /api/v1/secrets", RoleViewer, s.listSecrets)
	s.route("PUT /api/v1/secrets/{name}", RoleDeveloper, s.putSecret)
	s.route("DELETE /api/v1/secrets/{name}", RoleDeveloper, s.deleteSecret)

	s.route("POST /api/v1/tokens", RoleAdmin, s.createToken)
	s.route("GET /api/v1/tokens", RoleAdmin, s.listTokens)
	s.route("DELETE /api/v1/tokens/{id}", RoleAdmin, s.deleteToken)

	s.route("GET /api/v1/audit", RoleAdmin, s.listAudit)

	s.route("GET /api/v1/ws", RoleViewer, s.websocket)
}

// handlerFunc is an endpoint: it writes its answer and returns nil, or
// returns the error for writeError to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *principal) error

// route registers h at pattern behind authentication, for callers whose
// role is at least min.
func (s *Server) route(pattern string, min Role, h handlerFunc) {
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err == nil && !p.Role.atLeast(min) {
			err = errorf(http.StatusForbidden, codeForbidden, "the %s role may not do this (%s or above needed)", p.Role, min)
		}
		if err == nil {
			if info := logInfoFrom(r.Context()); info != nil {
				info.actor = p.Name
			}
			err = h(w, r, p)
		}
		if err != nil {
			if p == nil || !p.Role.atLeast(min) {
				closeUnread(w, r)
			}
			s.writeError(w, r, err)
		}
	}))
}

// closeUnread makes the answer close the connection when r announced a
// body that nothing read: net/http would otherwise read up to 256 KiB of
// it before answering, which an unauthenticated client can drip slowly.
func closeUnread(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// dispatch serves the request with its route, answering unknown paths and
// methods with JSON errors instead of the ServeMux's plain text.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if strings.IndexByte(r.URL.Path, 0) >= 0 || strings.Contains(r.URL.RawQuery, "%00") {
		s.writeError(w, r, invalidf("the URL holds a NUL byte"))
		return
	}
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// Let the mux decide between 404 and 405 (and set Allow), then answer
	// in JSON.
	rec := &headerRecorder{header: http.Header{}}
	s.mux.ServeHTTP(rec, r)
	if allow := rec.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	closeUnread(w, r)
	if rec.status == http.StatusMethodNotAllowed {
		s.writeError(w, r, errorf(http.StatusMethodNotAllowed, codeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	s.writeError(w, r, errorf(http.StatusNotFound, codeNotFound, "no such endpoint: %s", r.URL.Path))
}

// headerRecorder keeps the status and headers that a handler writes and
// drops its body.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}
func (h *headerRecorder) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return len(b), nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readiness(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		if err := s.ready(r.Context()); err != nil {
			// The reason may name hosts: log it, do not answer it.
			s.log.WarnContext(r.Context(), "not ready", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
