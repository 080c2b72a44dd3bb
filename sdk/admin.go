package sdk

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Health is the answer of GET /health.
type Health struct {
	Status string `json:"status"` // "ok"
}

// Health reports whether the server is up; it needs no token.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/health", nil, nil, &h)
	return h, err
}

// Ready reports whether the server's database and NATS answer: nil when they
// do, an *Error with status 503 when they do not. It needs no token.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/ready", nil, nil, nil)
}

// ListAgents returns a page of agents.
func (c *Client) ListAgents(ctx context.Context, opts ListOptions) (Page[Agent], error) {
	var p Page[Agent]
	err := c.do(ctx, http.MethodGet, "/agents", opts.values(), nil, &p)
	return p, err
}

// GetAgent returns an agent.
func (c *Client) GetAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	err := c.do(ctx, http.MethodGet, path("agents", id), nil, nil, &a)
	return a, err
}

// DrainAgent stops an agent from taking new jobs; it finishes those it has.
func (c *Client) DrainAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	err := c.do(ctx, http.MethodPost, path("agents", id, "drain"), nil, nil, &a)
	return a, err
}

// AgentToken is a one-time bootstrap token with which an agent registers.
type AgentToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"` // shown only in the answer to CreateAgentToken
	Labels    []string  `json:"labels"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateAgentToken makes a bootstrap token valid for ttl that gives the
// agent registering with it the labels (admin).
func (c *Client) CreateAgentToken(ctx context.Context, ttl time.Duration, labels []string) (AgentToken, error) {
	var t AgentToken
	err := c.do(ctx, http.MethodPost, path("agents", "tokens"), nil, map[string]any{"ttl": ttl.String(), "labels": labels}, &t)
	return t, err
}

// DeleteAgent deregisters an agent (admin).
func (c *Client) DeleteAgent(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, path("agents", id), nil, nil, nil)
}

// ListWorkers returns a page of elastic workers, newest first.
func (c *Client) ListWorkers(ctx context.Context, opts ListWorkersOptions) (Page[Worker], error) {
	q := opts.values()
	for _, s := range opts.States {
		q.Add("state", string(s))
	}
	set(q, "provider", opts.Provider)
	var p Page[Worker]
	err := c.do(ctx, http.MethodGet, "/workers", q, nil, &p)
	return p, err
}

// Providers returns the server's providers of elastic workers, each with
// its health, capacity and workers; none when it has no provider.
func (c *Client) Providers(ctx context.Context) ([]Provider, error) {
	var p Page[Provider]
	err := c.do(ctx, http.MethodGet, "/providers", nil, nil, &p)
	return p.Items, err
}

func (s SecretScope) values() url.Values {
	q := url.Values{}
	set(q, "scope", s.Scope)
	set(q, "scope_id", s.ScopeID)
	return q
}

// SetSecret stores a secret's value, creating or replacing it. The answer
// never holds the value.
func (c *Client) SetSecret(ctx context.Context, name, value string, scope SecretScope) (SecretInfo, error) {
	body := struct {
		Value   string `json:"value"`
		Scope   string `json:"scope,omitempty"`
		ScopeID string `json:"scope_id,omitempty"`
	}{value, scope.Scope, scope.ScopeID}
	var s SecretInfo
	err := c.do(ctx, http.MethodPut, path("secrets", name), nil, body, &s)
	return s, err
}

// ListSecrets returns a page of the secrets of a scope, without values.
func (c *Client) ListSecrets(ctx context.Context, opts ListSecretsOptions) (Page[SecretInfo], error) {
	q := opts.ListOptions.values()
	for k, v := range opts.SecretScope.values() {
		q[k] = v
	}
	var p Page[SecretInfo]
	err := c.do(ctx, http.MethodGet, "/secrets", q, nil, &p)
	return p, err
}

// DeleteSecret deletes a secret.
func (c *Client) DeleteSecret(ctx context.Context, name string, scope SecretScope) error {
	return c.do(ctx, http.MethodDelete, path("secrets", name), scope.values(), nil, nil)
}

// CreateToken issues an API token with a role: viewer, developer or admin
// (admin only). The answer's Secret is the token; it is shown only here.
func (c *Client) CreateToken(ctx context.Context, name, role string) (Token, error) {
	body := struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}{name, role}
	var t Token
	err := c.do(ctx, http.MethodPost, "/tokens", nil, body, &t)
	return t, err
}

// ListTokens returns a page of tokens, without their secrets (admin only).
func (c *Client) ListTokens(ctx context.Context, opts ListOptions) (Page[Token], error) {
	var p Page[Token]
	err := c.do(ctx, http.MethodGet, "/tokens", opts.values(), nil, &p)
	return p, err
}

// DeleteToken revokes a token (admin only).
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, path("tokens", id), nil, nil, nil)
}

// ListAudit returns a page of the audit log (admin only).
func (c *Client) ListAudit(ctx context.Context, opts ListAuditOptions) (Page[AuditEntry], error) {
	q := opts.values()
	set(q, "actor", opts.Actor)
	set(q, "resource_type", opts.ResourceType)
	set(q, "resource_id", opts.ResourceID)
	var p Page[AuditEntry]
	err := c.do(ctx, http.MethodGet, "/audit", q, nil, &p)
	return p, err
}
