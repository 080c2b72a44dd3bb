package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/store"
)

func TestSecrets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const value = "s3cr3t-VALUE-42"

	r := b.do(t, "PUT", "/api/v1/secrets/DEPLOY_KEY", b.developer, map[string]string{"value": value}).want(t, 200)
	if strings.Contains(string(r.body), value) || strings.Contains(string(r.body), "value") {
		t.Errorf("the answer shows the value: %s", r.body)
	}
	info := r.obj(t)
	if info["name"] != "DEPLOY_KEY" || info["scope"] != "organization" || info["created_at"] == nil {
		t.Errorf("answer = %v", info)
	}
	e := b.wantAudit(t, "dev", "secret.set", "secret", "organization/DEPLOY_KEY")
	if strings.Contains(string(e.Details), value) {
		t.Errorf("the audit entry holds the value: %s", e.Details)
	}

	// The row holds a ciphertext bound to its key: not the value, and it
	// opens only as this secret.
	row, err := b.store.Secrets().Get(ctx, store.SecretKey{Scope: store.ScopeOrganization, Name: "DEPLOY_KEY"})
	if err != nil {
		t.Fatal(err)
	}
	if len(row.Ciphertext) == 0 || bytes.Contains(row.Ciphertext, []byte(value)) || bytes.Contains(row.Ciphertext, []byte("s3cr3t")) {
		t.Fatalf("stored ciphertext %q holds the value", row.Ciphertext)
	}
	plain, err := b.box.Open(row.Ciphertext, secrets.AD("organization", "", "DEPLOY_KEY"))
	if err != nil || string(plain) != value {
		t.Fatalf("Open = %q, %v", plain, err)
	}
	if _, err := b.box.Open(row.Ciphertext, secrets.AD("organization", "", "OTHER")); err == nil {
		t.Error("the ciphertext opens as another secret")
	}

	// Pipeline scope, by the pipeline's name; stored by its ID.
	pid := b.createPipeline(t, "web")
	b.do(t, "PUT", "/api/v1/secrets/DEPLOY_KEY", b.developer, map[string]string{"value": "other", "scope": "pipeline", "scope_id": "web"}).want(t, 200)
	if _, err := b.store.Secrets().Get(ctx, store.SecretKey{Scope: store.ScopePipeline, ScopeID: pid, Name: "DEPLOY_KEY"}); err != nil {
		t.Errorf("pipeline secret: %v", err)
	}

	for _, path := range []string{"/api/v1/secrets", "/api/v1/secrets?scope=pipeline&scope_id=" + pid} {
		r := b.do(t, "GET", path, b.viewer, nil).want(t, 200)
		if strings.Contains(string(r.body), value) || strings.Contains(string(r.body), "other") || strings.Contains(string(r.body), "ciphertext") {
			t.Errorf("%s shows values: %s", path, r.body)
		}
		var page struct {
			Items []struct{ Name, Scope, ScopeID string }
		}
		r.json(t, &page)
		if len(page.Items) != 1 || page.Items[0].Name != "DEPLOY_KEY" {
			t.Errorf("%s = %s", path, r.body)
		}
	}

	tests := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"PUT", "/api/v1/secrets/bad-name", map[string]string{"value": "x"}, 400, "invalid_request"},
		{"PUT", "/api/v1/secrets/K", map[string]string{}, 400, "invalid_request"},
		{"PUT", "/api/v1/secrets/K", map[string]string{"value": "x", "scope": "galaxy"}, 400, "invalid_request"},
		{"PUT", "/api/v1/secrets/K", map[string]string{"value": "x", "scope": "pipeline"}, 400, "invalid_request"},
		{"PUT", "/api/v1/secrets/K", map[string]string{"value": "x", "scope": "pipeline", "scope_id": "nope"}, 404, "not_found"},
		{"PUT", "/api/v1/secrets/K", map[string]string{"value": "x", "scope_id": "x"}, 400, "invalid_request"},
		{"PUT", "/api/v1/secrets/K", map[string]string{"value": "x", "note": "y"}, 400, "invalid_request"},
		{"PUT", "/api/v1/secrets/K", map[string]string{"value": "x"}, 403, "forbidden"}, // as a viewer, below
		{"GET", "/api/v1/secrets?scope=galaxy", nil, 400, "invalid_request"},
		{"DELETE", "/api/v1/secrets/MISSING", nil, 404, "not_found"},
	}
	for _, tt := range tests {
		tok := b.developer
		if tt.status == 403 {
			tok = b.viewer
		}
		b.do(t, tt.method, tt.path, tok, tt.body).wantError(t, tt.status, tt.code)
	}

	b.do(t, "DELETE", "/api/v1/secrets/DEPLOY_KEY?scope=pipeline&scope_id="+pid, b.developer, nil).want(t, 204)
	b.wantAudit(t, "dev", "secret.delete", "secret", "pipeline/"+pid+"/DEPLOY_KEY")
	if _, err := b.store.Secrets().Get(ctx, store.SecretKey{Scope: store.ScopeOrganization, Name: "DEPLOY_KEY"}); err != nil {
		t.Errorf("deleting the pipeline's secret touched the organization's: %v", err)
	}
	// No audit entry anywhere holds a value.
	for _, e := range b.auditEntries(t) {
		if strings.Contains(string(e.Details), value) {
			t.Errorf("audit entry %+v holds the value", e)
		}
	}
}

func TestAgents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, err := b.store.Agents().Register(ctx, store.Agent{Name: "runner-1", Labels: []string{"linux"}, OS: "linux", Arch: "amd64", Version: "1.0", Capacity: 2})
	if err != nil {
		t.Fatal(err)
	}

	var page struct {
		Items []map[string]any
	}
	b.do(t, "GET", "/api/v1/agents", b.viewer, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 || page.Items[0]["name"] != "runner-1" || page.Items[0]["status"] != "online" || page.Items[0]["capacity"] != 2.0 {
		t.Errorf("agents = %v", page.Items)
	}
	got := b.do(t, "GET", "/api/v1/agents/"+a.ID, b.viewer, nil).want(t, 200).obj(t)
	for _, k := range []string{"id", "name", "labels", "status", "version", "os", "arch", "capacity", "last_heartbeat_at", "registered_at"} {
		if _, ok := got[k]; !ok {
			t.Errorf("agent lacks %q: %v", k, got)
		}
	}
	b.do(t, "GET", "/api/v1/agents/nope", b.viewer, nil).wantError(t, 404, "not_found")

	if got := b.do(t, "POST", "/api/v1/agents/"+a.ID+"/drain", b.developer, nil).want(t, 200).obj(t); got["status"] != "draining" {
		t.Errorf("drained agent = %v", got)
	}
	b.wantAudit(t, "dev", "agent.drain", "agent", a.ID)
	b.do(t, "POST", "/api/v1/agents/nope/drain", b.developer, nil).wantError(t, 404, "not_found")

	b.do(t, "DELETE", "/api/v1/agents/"+a.ID, b.developer, nil).wantError(t, 403, "forbidden")
	b.do(t, "DELETE", "/api/v1/agents/"+a.ID, b.admin, nil).want(t, 204)
	b.wantAudit(t, "root", "agent.deregister", "agent", a.ID)
	b.do(t, "DELETE", "/api/v1/agents/"+a.ID, b.admin, nil).wantError(t, 404, "not_found")
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, n := range []string{"a", "b", "c"} {
		b.createPipeline(t, n)
	}
	b.do(t, "POST", "/api/v1/tokens", b.admin, map[string]string{"name": "bot", "role": "viewer"}).want(t, 201)

	type entry struct {
		ID           json.Number `json:"id"`
		Actor        string      `json:"actor"`
		Action       string      `json:"action"`
		ResourceType string      `json:"resource_type"`
		ResourceID   string      `json:"resource_id"`
		Time         string      `json:"time"`
	}
	var page struct {
		Items []entry
		Next  string
	}
	b.do(t, "GET", "/api/v1/audit", b.admin, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 4 || page.Items[0].Action != "token.create" || page.Items[0].Actor != "root" || page.Items[0].Time == "" {
		t.Fatalf("audit = %+v", page.Items)
	}
	b.do(t, "GET", "/api/v1/audit?actor=dev&resource_type=pipeline", b.admin, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 3 {
		t.Errorf("dev's pipeline entries = %+v", page.Items)
	}
	b.do(t, "GET", "/api/v1/audit?resource_id="+page.Items[1].ResourceID, b.admin, nil).want(t, 200).json(t, &page)
	if len(page.Items) != 1 {
		t.Errorf("entries of one pipeline = %+v", page.Items)
	}

	// Pages, newest first, without overlap.
	var seen []string
	cursor := ""
	for range 5 {
		var p struct {
			Items []entry
			Next  string
		}
		path := "/api/v1/audit?limit=3"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		b.do(t, "GET", path, b.admin, nil).want(t, 200).json(t, &p)
		for _, e := range p.Items {
			seen = append(seen, e.ID.String())
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(seen) != 4 || seen[0] <= seen[3] {
		t.Errorf("paged through ids %v", seen)
	}
	b.do(t, "GET", "/api/v1/audit?cursor=nonsense", b.admin, nil).wantError(t, 400, "invalid_request")
}

func TestAgentTokens(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	start := time.Now()
	got := b.do(t, "POST", "/api/v1/agents/tokens", b.admin, map[string]any{"ttl": "10m", "labels": []string{"linux", "docker"}}).want(t, 201).obj(t)
	tok, _ := got["token"].(string)
	if !strings.HasPrefix(tok, "oxb_") || got["id"] == "" || fmt.Sprint(got["labels"]) != "[linux docker]" {
		t.Fatalf("answer %v", got)
	}
	expires, err := time.Parse(time.RFC3339Nano, got["expires_at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if d := expires.Sub(start); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("expires in %s, want 10m", d)
	}
	// Stored hashed, spendable once.
	all, err := b.store.BootstrapTokens().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Hash != pki.HashToken(tok) || all[0].CreatedBy != "root" {
		t.Fatalf("stored %+v", all)
	}
	if _, err := b.store.BootstrapTokens().Spend(ctx, pki.HashToken(tok), "agent-1"); err != nil {
		t.Errorf("spend: %v", err)
	}
	e := b.wantAudit(t, "root", "agent_token.create", "bootstrap_token", all[0].ID)
	if strings.Contains(string(e.Details), tok) || strings.Contains(string(e.Details), all[0].Hash) {
		t.Errorf("the audit entry holds the token: %s", e.Details)
	}

	// No body: an hour, no labels.
	got = b.do(t, "POST", "/api/v1/agents/tokens", b.admin, nil).want(t, 201).obj(t)
	if fmt.Sprint(got["labels"]) != "[]" {
		t.Errorf("labels %v, want []", got["labels"])
	}

	tests := []struct {
		token  string
		body   any
		status int
		code   string
	}{
		{b.developer, map[string]any{"ttl": "10m"}, 403, "forbidden"},
		{b.viewer, nil, 403, "forbidden"},
		{"", nil, 401, "unauthorized"},
		{b.admin, map[string]any{"ttl": "soon"}, 400, "invalid_request"},
		{b.admin, map[string]any{"ttl": "1s"}, 400, "invalid_request"},
		{b.admin, map[string]any{"ttl": "9999h"}, 400, "invalid_request"},
		{b.admin, map[string]any{"labels": []string{"a b"}}, 400, "invalid_request"},
		{b.admin, map[string]any{"labels": []string{""}}, 400, "invalid_request"},
		{b.admin, map[string]any{"name": "x"}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		b.do(t, "POST", "/api/v1/agents/tokens", tt.token, tt.body).wantError(t, tt.status, tt.code)
	}
	if all, _ := b.store.BootstrapTokens().List(ctx); len(all) != 2 {
		t.Errorf("%d tokens stored, want 2", len(all))
	}
}
