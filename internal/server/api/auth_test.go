package api_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/server/api"
)

func TestHealthAndReady(t *testing.T) {
	t.Parallel()
	var notReady error
	b := setupWith(t, options{ready: func(context.Context) error { return notReady }})
	for _, path := range []string{"/health", "/api/v1/health"} {
		r := b.do(t, "GET", path, "", nil).want(t, 200)
		if got := r.obj(t); got["status"] != "ok" {
			t.Errorf("%s = %s", path, r.body)
		}
	}
	b.do(t, "GET", "/ready", "", nil).want(t, 200)
	notReady = errors.New("database at db.internal:5432 is down")
	r := b.do(t, "GET", "/ready", "", nil).want(t, 503)
	if strings.Contains(string(r.body), "db.internal") {
		t.Errorf("/ready shows the reason to anonymous callers: %s", r.body)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name   string
		header string // Authorization
		path   string
		status int
	}{
		{"no token", "", "/api/v1/pipelines", 401},
		{"unknown token", "Bearer " + api.NewToken(), "/api/v1/pipelines", 401},
		{"not bearer", "Basic " + b.viewer, "/api/v1/pipelines", 401},
		{"empty bearer", "Bearer ", "/api/v1/pipelines", 401},
		{"query token outside the WebSocket", "", "/api/v1/pipelines?token=" + b.admin, 401},
		{"valid", "Bearer " + b.viewer, "/api/v1/pipelines", 200},
		{"scheme is case-insensitive", "bearer " + b.viewer, "/api/v1/pipelines", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", b.srv.URL+tt.path, nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := b.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	r := b.do(t, "GET", "/api/v1/pipelines", "", nil)
	if msg, _ := r.wantError(t, 401, "unauthorized"); msg == "" {
		t.Error("401 without a message")
	}
}

// A refused request is answered before its body arrives, and its
// connection closed: a client announcing a large body and sending one byte
// gets its 401 (or 404, 413) at once, not when the server has read 256 KiB.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	addr := strings.TrimPrefix(b.srv.URL, "http://")
	for _, tt := range []struct {
		path   string
		length int
		status string
	}{
		{"/api/v1/pipelines", 200000, "401"},
		{"/api/v1/nowhere", 200000, "404"},
		{"/api/v1/pipelines", 2 << 20, "413"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", tt.path, tt.length)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("POST %s: no answer before the body: %v", tt.path, err)
		}
		if !strings.HasPrefix(resp.Status, tt.status) || !resp.Close {
			t.Errorf("POST %s: %s, close %v; want %s and the connection closed", tt.path, resp.Status, resp.Close, tt.status)
		}
		resp.Body.Close()
	}
}

// The role table of docs/api.md.
func TestRoles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	type call struct{ method, path string }
	var (
		viewerCalls = []call{
			{"GET", "/api/v1/pipelines"}, {"GET", "/api/v1/jobs"}, {"GET", "/api/v1/templates"},
			{"GET", "/api/v1/agents"}, {"GET", "/api/v1/secrets"},
		}
		developerCalls = []call{
			{"POST", "/api/v1/pipelines"}, {"PUT", "/api/v1/pipelines/x"}, {"DELETE", "/api/v1/pipelines/x"},
			{"POST", "/api/v1/pipelines/x/runs"}, {"POST", "/api/v1/runs/x/cancel"},
			{"POST", "/api/v1/runs/x/stages/s/approve"}, {"POST", "/api/v1/runs/x/stages/s/reject"},
			{"POST", "/api/v1/jobs"}, {"POST", "/api/v1/jobs/x/cancel"},
			{"POST", "/api/v1/templates"}, {"PUT", "/api/v1/templates/x"}, {"DELETE", "/api/v1/templates/x"},
			{"POST", "/api/v1/templates/x/instantiate"},
			{"PUT", "/api/v1/secrets/X"}, {"DELETE", "/api/v1/secrets/X"}, {"POST", "/api/v1/agents/x/drain"},
		}
		adminCalls = []call{
			{"POST", "/api/v1/tokens"}, {"GET", "/api/v1/tokens"}, {"DELETE", "/api/v1/tokens/x"},
			{"GET", "/api/v1/audit"}, {"DELETE", "/api/v1/agents/x"},
		}
	)
	allowed := func(c call, token string) {
		t.Helper()
		// Allowed calls get past authorization: anything but 401 and 403
		// (400 for the empty bodies, 404 for the made-up IDs).
		if r := b.do(t, c.method, c.path, token, "{}"); r.status == 401 || r.status == 403 {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	forbidden := func(c call, token string) {
		t.Helper()
		r := b.do(t, c.method, c.path, token, "{}")
		if r.status != 403 {
			t.Errorf("%s %s: status %d, want 403: %s", c.method, c.path, r.status, r.body)
			return
		}
		if code, _, _ := r.apiErr(t); code != "forbidden" {
			t.Errorf("%s %s: code %q", c.method, c.path, code)
		}
	}
	for _, c := range viewerCalls {
		allowed(c, b.viewer)
		allowed(c, b.developer)
		allowed(c, b.admin)
	}
	for _, c := range developerCalls {
		forbidden(c, b.viewer)
		allowed(c, b.developer)
		allowed(c, b.admin)
	}
	for _, c := range adminCalls {
		forbidden(c, b.viewer)
		forbidden(c, b.developer)
		allowed(c, b.admin)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.do(t, "GET", "/api/v1/nothing-here", b.admin, nil).wantError(t, 404, "not_found")
	r := b.do(t, "PATCH", "/api/v1/pipelines", b.admin, "{}")
	r.wantError(t, 405, "method_not_allowed")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q", allow)
	}
}

func TestRequestIDAndPanicRecovery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, "POST", "/api/v1/jobs", b.developer, map[string]any{"name": "panic", "command": "x"})
	msg, _ := r.wantError(t, 500, "internal")
	id := r.header.Get("X-Request-ID")
	if id == "" || !strings.Contains(msg, id) {
		t.Errorf("500 message %q does not name the request ID %q", msg, id)
	}
	if !strings.Contains(b.logs.String(), "panic in handler") {
		t.Error("the panic is not logged")
	}
	// The server goes on serving.
	b.do(t, "GET", "/api/v1/jobs", b.viewer, nil).want(t, 200)

	req, _ := http.NewRequest("GET", b.srv.URL+"/health", nil)
	req.Header.Set("X-Request-ID", "trace-123")
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-ID"); got != "trace-123" {
		t.Errorf("X-Request-ID = %q, want the client's", got)
	}
}

// The access log has a line per request, and never a token or a body.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.do(t, "GET", "/api/v1/pipelines", b.viewer, nil).want(t, 200)
	b.do(t, "GET", "/api/v1/ws?token="+b.viewer, "", nil) // not a WebSocket handshake; the query holds a token
	b.do(t, "PUT", "/api/v1/secrets/LOGGED", b.developer, map[string]string{"value": "hunter2-secret"}).want(t, 200)
	logs := b.logs.String()
	for _, leak := range []string{b.viewer, b.developer, api.TokenPrefix, "hunter2-secret"} {
		if strings.Contains(logs, leak) {
			t.Errorf("the log contains %q:\n%s", leak, logs)
		}
	}
	if !strings.Contains(logs, `"path":"/api/v1/pipelines"`) || !strings.Contains(logs, `"actor":"watcher"`) {
		t.Errorf("no access log line for the request:\n%s", logs)
	}
}

func TestBootstrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("generated", func(t *testing.T) {
		t.Parallel()
		tokens, dir := newMemTokens(), t.TempDir()
		tok, err := api.Bootstrap(ctx, tokens, dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, api.TokenPrefix) || len(tok) != len(api.TokenPrefix)+43 {
			t.Fatalf("token %q is not oxt_ and 32 bytes of base64url", tok)
		}
		path := filepath.Join(dir, api.AdminTokenFile)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode %04o, want 0600", path, perm)
		}
		data, _ := os.ReadFile(path)
		if strings.TrimSpace(string(data)) != tok {
			t.Errorf("file holds %q, want the token", data)
		}
		got, err := tokens.GetByHash(ctx, api.HashToken(tok))
		if err != nil || got.Role != api.RoleAdmin {
			t.Fatalf("stored token = %+v, %v", got, err)
		}
		if got.Hash == tok || strings.Contains(got.Hash, tok) {
			t.Error("the token is stored in clear")
		}
		// With an admin present, nothing happens.
		again, err := api.Bootstrap(ctx, tokens, dir, "")
		if err != nil || again != "" {
			t.Errorf("second Bootstrap = %q, %v", again, err)
		}
		if all, _ := tokens.List(ctx); len(all) != 1 {
			t.Errorf("%d tokens after two bootstraps", len(all))
		}
	})

	t.Run("from the environment", func(t *testing.T) {
		t.Parallel()
		tokens, dir := newMemTokens(), t.TempDir()
		// A viewer named admin does not count, nor block the name.
		if _, err := tokens.Create(ctx, api.Token{Name: "admin", Role: api.RoleViewer, Hash: "x"}); err != nil {
			t.Fatal(err)
		}
		const env = "operator-chosen-admin-token"
		tok, err := api.Bootstrap(ctx, tokens, dir, env)
		if err != nil || tok != "" {
			t.Fatalf("Bootstrap = %q, %v; want nothing to print", tok, err)
		}
		if got, err := tokens.GetByHash(ctx, api.HashToken(env)); err != nil || got.Role != api.RoleAdmin {
			t.Fatalf("env token = %+v, %v", got, err)
		}
		if _, err := os.Stat(filepath.Join(dir, api.AdminTokenFile)); err == nil {
			t.Error("an env token was written to a file")
		}
		if _, err := api.Bootstrap(ctx, newMemTokens(), dir, "short"); err == nil {
			t.Error("a short OXIDE_ADMIN_TOKEN was accepted")
		}
	})

	t.Run("works with the API", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tokens := newMemTokens()
		tok, err := api.Bootstrap(ctx, tokens, t.TempDir(), "")
		if err != nil {
			t.Fatal(err)
		}
		b.tokens.mu.Lock()
		for id, tk := range tokens.tokens {
			b.tokens.tokens[id] = tk
		}
		b.tokens.mu.Unlock()
		b.do(t, "GET", "/api/v1/tokens", tok, nil).want(t, 200)
	})
}

func TestTokens(t *testing.T) {
	t.Parallel()
	b := setup(t)

	var created struct {
		ID, Name, Role, Token string
	}
	b.do(t, "POST", "/api/v1/tokens", b.admin, map[string]string{"name": "ci-bot", "role": "developer"}).want(t, 201).json(t, &created)
	if created.ID == "" || created.Name != "ci-bot" || created.Role != "developer" || !strings.HasPrefix(created.Token, "oxt_") {
		t.Fatalf("created = %+v", created)
	}
	b.wantAudit(t, "root", "token.create", "token", created.ID)
	b.do(t, "POST", "/api/v1/pipelines", created.Token, map[string]string{"name": "by-bot", "definition": validPipeline}).want(t, 201)
	b.wantAudit(t, "ci-bot", "pipeline.create", "pipeline", "")

	tests := []struct {
		body   any
		status int
		code   string
	}{
		{map[string]string{"name": "ci-bot", "role": "viewer"}, 409, "conflict"},
		{map[string]string{"name": "x", "role": "owner"}, 400, "invalid_request"},
		{map[string]string{"name": "has space", "role": "viewer"}, 400, "invalid_request"},
		{map[string]string{"name": "x", "role": "viewer", "expires": "never"}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		b.do(t, "POST", "/api/v1/tokens", b.admin, tt.body).wantError(t, tt.status, tt.code)
	}

	r := b.do(t, "GET", "/api/v1/tokens", b.admin, nil).want(t, 200)
	if strings.Contains(string(r.body), created.Token) || strings.Contains(string(r.body), api.HashToken(created.Token)) {
		t.Errorf("the token list shows a token or its hash: %s", r.body)
	}
	var page struct {
		Items []struct {
			ID, Name, Role string
			LastUsedAt     *string `json:"last_used_at"`
		}
	}
	r.json(t, &page)
	if len(page.Items) != 4 {
		t.Fatalf("%d tokens, want 4: %s", len(page.Items), r.body)
	}
	for _, it := range page.Items {
		if it.Name == "ci-bot" && it.LastUsedAt == nil {
			t.Error("the used token has no last_used_at")
		}
	}

	b.do(t, "DELETE", "/api/v1/tokens/"+created.ID, b.admin, nil).want(t, 204)
	b.wantAudit(t, "root", "token.delete", "token", created.ID)
	b.do(t, "GET", "/api/v1/pipelines", created.Token, nil).wantError(t, 401, "unauthorized")
	b.do(t, "DELETE", "/api/v1/tokens/"+created.ID, b.admin, nil).wantError(t, 404, "not_found")

	// The last admin token stays.
	var rootID string
	for _, it := range page.Items {
		if it.Name == "root" {
			rootID = it.ID
		}
	}
	b.do(t, "DELETE", "/api/v1/tokens/"+rootID, b.admin, nil).wantError(t, 409, "conflict")
}
