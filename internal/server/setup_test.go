package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// testConfig is the server's default configuration (as its flags declare
// it) for a test: a fresh data directory, free ports, its own agent with
// one slot that runs every job on the host.
func testConfig(t *testing.T) Config {
	t.Helper()
	var cfg Config
	cfg.Flags(pflag.NewFlagSet("test", pflag.ContinueOnError))
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.Agents = 1
	cfg.AgentDir = testkit.SharedDir(t)
	cfg.HostOnly = true
	return cfg
}

// testServer is a server started with Run in this process.
type testServer struct {
	URL     string // http://host:port
	Token   string // the admin token (OXIDE_ADMIN_TOKEN)
	Config  Config
	logs    *lockedBuffer
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
	err     error
}

// startServer runs the server until the test ends and returns once it
// answers. It sets OXIDE_ADMIN_TOKEN, so its test cannot be parallel. The
// server's log is printed if the test fails.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	return startServerToken(t, cfg, api.NewToken())
}

// restart starts a server again on s's configuration and data directory,
// with its admin token.
func (s *testServer) restart(t *testing.T) *testServer {
	t.Helper()
	return startServerToken(t, s.Config, s.Token)
}

func startServerToken(t *testing.T, cfg Config, tok string) *testServer {
	t.Helper()
	t.Setenv("OXIDE_ADMIN_TOKEN", tok)
	s := &testServer{Token: tok, Config: cfg, logs: &lockedBuffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan string, 1)
	go func() { s.done <- Run(ctx, cfg, log, func(addr string) { ready <- addr }) }()
	t.Cleanup(func() {
		if err := s.stop(30 * time.Second); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	select {
	case addr := <-ready:
		s.URL = "http://" + addr
	case err := <-s.done:
		s.stopped.Do(func() { s.err = err })
		t.Fatalf("Run returned before the server was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server was not ready after 30s")
	}
	return s
}

// stop cancels Run's context and returns its error, or a timeout error if it
// has not returned within limit. Later calls return the same.
func (s *testServer) stop(limit time.Duration) error {
	s.stopped.Do(func() {
		s.cancel()
		select {
		case s.err = <-s.done:
		case <-time.After(limit):
			s.err = errTimeout{limit}
		}
	})
	return s.err
}

type errTimeout struct{ d time.Duration }

func (e errTimeout) Error() string { return "did not return within " + e.d.String() }

// response is an HTTP answer.
type response struct {
	status int
	body   []byte
}

// call calls the server with token (none if empty) and body (JSON-encoded
// unless nil).
func (s *testServer) call(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return response{status: resp.StatusCode, body: b}
}

// want fails the test unless r has the status, and decodes its body into v
// (if not nil).
func (r response) want(t *testing.T, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("answer is not JSON: %v\n%s", err, r.body)
		}
	}
}

// apiError is the body of an error answer.
type apiError struct {
	Error struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Details []string `json:"details"`
	} `json:"error"`
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// quietLogger drops everything: for the failures that a test provokes.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
