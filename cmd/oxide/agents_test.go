package main

import (
	"encoding/json"
	"github.com/oxide-ci/oxide/sdk"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestAgentTokenCreate runs `oxide agents token create` against a server
// that answers POST /api/v1/agents/tokens as the API does.
func TestAgentTokenCreate(t *testing.T) {
	const token = "oxb_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	var (
		mu     sync.Mutex
		bodies []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != "POST" || r.URL.Path != "/api/v1/agents/tokens" {
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"not_found","message":"no such endpoint"}}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			w.WriteHeader(403)
			io.WriteString(w, `{"error":{"code":"forbidden","message":"the developer role may not do this (admin or above needed)"}}`)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		var req struct {
			TTL    string   `json:"ttl"`
			Labels []string `json:"labels"`
		}
		json.Unmarshal(b, &req)
		if req.Labels == nil {
			req.Labels = []string{}
		}
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(map[string]any{
			"id": "t1", "token": token, "labels": req.Labels,
			"created_at": "2026-01-02T03:04:05Z", "expires_at": "2026-01-02T03:14:05Z",
		})
	}))
	defer srv.Close()
	clientEnv(t, srv.URL, fakeToken)

	// Not a terminal: the token alone.
	r := oxide(t, "", "agents", "token", "create", "--ttl", "10m", "--labels", "linux,docker").must(t, 0)
	if r.stdout != token+"\n" {
		t.Errorf("stdout %q, want the token alone", r.stdout)
	}
	if !jsonSame(bodies[0], `{"ttl":"10m0s","labels":["linux","docker"]}`) {
		t.Errorf("body %s", bodies[0])
	}

	r = oxide(t, "", "agents", "token", "create", "-o", "json").must(t, 0)
	var got sdk.AgentToken
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Token != token || got.ID != "t1" || got.ExpiresAt.IsZero() {
		t.Errorf("json output %q (%v)", r.stdout, err)
	}
	if !jsonSame(bodies[1], `{"ttl":"1h0m0s","labels":null}`) {
		t.Errorf("body %s", bodies[1])
	}

	oxide(t, "", "agents", "token", "create", "--ttl", "soon").must(t, exitUsage)
	oxide(t, "", "agents", "token", "create", "--ttl", "-1m").must(t, exitUsage)

	// Not an admin.
	clientEnv(t, srv.URL, "oxt_not-an-admin")
	r = oxide(t, "", "agents", "token", "create").must(t, 1)
	has(t, "stderr", r.stderr, `admin or above needed\) \(forbidden\)`)
	if strings.Contains(r.stdout, "oxb_") {
		t.Errorf("stdout %q", r.stdout)
	}
}
