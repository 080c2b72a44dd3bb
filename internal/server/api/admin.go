package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/store"
)

// Agents.

type agentJSON struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	Labels          []string          `json:"labels"`
	Status          store.AgentStatus `json:"status"`
	Version         string            `json:"version,omitempty"`
	OS              string            `json:"os,omitempty"`
	Arch            string            `json:"arch,omitempty"`
	Capacity        int               `json:"capacity"`
	CPUMillis       int64             `json:"cpu_millis,omitempty"`
	MemoryBytes     int64             `json:"memory_bytes,omitempty"`
	GPUs            int               `json:"gpus,omitempty"`
	LastHeartbeatAt *time.Time        `json:"last_heartbeat_at,omitempty"`
	RegisteredAt    time.Time         `json:"registered_at"`
}

func toAgent(a store.Agent) agentJSON {
	out := agentJSON{
		ID: a.ID, Name: a.Name, Labels: a.Labels, Status: a.Status, Version: a.Version, OS: a.OS, Arch: a.Arch,
		Capacity: a.Capacity, CPUMillis: a.CPUMillis, MemoryBytes: a.MemoryBytes, GPUs: a.GPUs,
		LastHeartbeatAt: utc(a.LastHeartbeatAt), RegisteredAt: a.RegisteredAt.UTC(),
	}
	if out.Labels == nil {
		out.Labels = []string{}
	}
	return out
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	all, err := s.store.Agents().List(r.Context())
	if err != nil {
		return err
	}
	page, next := paginate(all, limit, offset)
	writeJSON(w, http.StatusOK, list[agentJSON]{Items: mapItems(page, toAgent), Next: next})
	return nil
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request, _ *principal) error {
	a, err := s.store.Agents().Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("agent %q: %w", r.PathValue("id"), err)
	}
	writeJSON(w, http.StatusOK, toAgent(a))
	return nil
}

func (s *Server) drainAgent(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	a, err := s.control.DrainAgent(r.Context(), id, p.Name)
	if err != nil {
		return fmt.Errorf("agent %q: %w", id, err)
	}
	writeJSON(w, http.StatusOK, toAgent(a))
	return nil
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	err := s.store.InTx(r.Context(), func(tx store.Tx) error {
		a, err := tx.Agents().Get(r.Context(), id)
		if err != nil {
			return fmt.Errorf("agent %q: %w", id, err)
		}
		if err := tx.Agents().Delete(r.Context(), id); err != nil {
			return fmt.Errorf("agent %q: %w", id, err)
		}
		return record(r.Context(), tx, p, auditEntry{"agent.deregister", "agent", id, map[string]string{"name": a.Name}})
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Bootstrap tokens of agents.

type agentTokenJSON struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"` // shown once
	Labels    []string  `json:"labels"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// createAgentToken makes a one-time bootstrap token with which an agent
// registers (oxide-agent --token): it expires after ttl (default 1h) and
// gives the agent labels besides those it asks for. Only its hash is
// stored.
func (s *Server) createAgentToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		TTL    string   `json:"ttl"`
		Labels []string `json:"labels"`
	}
	if err := decodeOptional(r, &req); err != nil {
		return err
	}
	ttl := pki.DefaultTokenTTL
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return invalidf("ttl %q is not a duration (10m, 24h)", req.TTL)
		}
	}
	if err := pki.CheckTokenTTL(ttl); err != nil {
		return invalidf("%v", err)
	}
	if err := pki.CheckLabels(req.Labels); err != nil {
		return invalidf("%v", err)
	}
	token, hash := pki.NewBootstrapToken()
	var t store.BootstrapToken
	err := s.store.InTx(r.Context(), func(tx store.Tx) (err error) {
		t, err = tx.BootstrapTokens().Create(r.Context(), store.BootstrapToken{Hash: hash, Labels: req.Labels, CreatedBy: p.Name}, ttl)
		if err != nil {
			return err
		}
		return record(r.Context(), tx, p, auditEntry{"agent_token.create", "bootstrap_token", t.ID, map[string]any{
			"labels": t.Labels, "expires_at": t.ExpiresAt.UTC(),
		}})
	})
	if err != nil {
		return err
	}
	out := agentTokenJSON{ID: t.ID, Token: token, Labels: t.Labels, CreatedAt: t.CreatedAt.UTC(), ExpiresAt: t.ExpiresAt.UTC()}
	if out.Labels == nil {
		out.Labels = []string{}
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// Secrets.

// secretName is the form of secret names: they become environment
// variables of jobs.
var secretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

type secretJSON struct {
	Name      string            `json:"name"`
	Scope     store.SecretScope `json:"scope"`
	ScopeID   string            `json:"scope_id,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// toSecret converts a secret without its value: there is no field for it.
func toSecret(s store.Secret) secretJSON {
	return secretJSON{Name: s.Name, Scope: s.Scope, ScopeID: s.ScopeID, CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC()}
}

// secretScope validates a scope and scope ID (default: the organization).
// A pipeline is named by ID or name and stored by ID.
func (s *Server) secretScope(r *http.Request, scope, scopeID string) (store.SecretScope, string, error) {
	sc := store.SecretScope(scope)
	switch sc {
	case "", store.ScopeOrganization:
		if scopeID != "" {
			return "", "", invalidf("scope_id: the organization scope takes none")
		}
		return store.ScopeOrganization, "", nil
	case store.ScopePipeline:
		if scopeID == "" {
			return "", "", invalidf("scope_id: the pipeline scope needs the pipeline's ID or name")
		}
		p, err := findPipeline(r.Context(), s.store, scopeID)
		if err != nil {
			return "", "", err
		}
		return sc, p.ID, nil
	case store.ScopeProject:
		if scopeID == "" {
			return "", "", invalidf("scope_id: the project scope needs the project's ID")
		}
		return sc, scopeID, nil
	}
	return "", "", invalidf("scope %q is not one of organization, project, pipeline", scope)
}

func checkSecretName(name string) error {
	if !secretName.MatchString(name) || len(name) > maxNameLen {
		return invalidf("secret name %q: letters, digits and _, not starting with a digit, at most %d", name, maxNameLen)
	}
	return nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	scope, scopeID, err := s.secretScope(r, q.Get("scope"), q.Get("scope_id"))
	if err != nil {
		return err
	}
	all, err := s.store.Secrets().List(r.Context(), scope, scopeID)
	if err != nil {
		return err
	}
	page, next := paginate(all, limit, offset)
	writeJSON(w, http.StatusOK, list[secretJSON]{Items: mapItems(page, toSecret), Next: next})
	return nil
}

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Value   *string `json:"value"`
		Scope   string  `json:"scope"`
		ScopeID string  `json:"scope_id"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := checkSecretName(name); err != nil {
		return err
	}
	if req.Value == nil || *req.Value == "" {
		return invalidf("value: required")
	}
	scope, scopeID, err := s.secretScope(r, req.Scope, req.ScopeID)
	if err != nil {
		return err
	}
	if s.box == nil {
		return errors.New("secrets: no encryption key configured")
	}
	key := store.SecretKey{Scope: scope, ScopeID: scopeID, Name: name}
	ciphertext := s.box.Seal([]byte(*req.Value), secrets.AD(string(scope), scopeID, name))
	var saved store.Secret
	err = s.store.InTx(r.Context(), func(tx store.Tx) (err error) {
		if saved, err = tx.Secrets().Put(r.Context(), store.Secret{SecretKey: key, Ciphertext: ciphertext}); err != nil {
			return err
		}
		return record(r.Context(), tx, p, auditEntry{"secret.set", "secret", secretID(key), key})
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSecret(saved))
	return nil
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	if err := checkSecretName(name); err != nil {
		return err
	}
	q := r.URL.Query()
	scope, scopeID, err := s.secretScope(r, q.Get("scope"), q.Get("scope_id"))
	if err != nil {
		return err
	}
	key := store.SecretKey{Scope: scope, ScopeID: scopeID, Name: name}
	err = s.store.InTx(r.Context(), func(tx store.Tx) error {
		if err := tx.Secrets().Delete(r.Context(), key); err != nil {
			return fmt.Errorf("secret %s: %w", secretID(key), err)
		}
		return record(r.Context(), tx, p, auditEntry{"secret.delete", "secret", secretID(key), key})
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// secretID names a secret in the audit log: scope[/scope_id]/name.
func secretID(k store.SecretKey) string {
	if k.ScopeID == "" {
		return string(k.Scope) + "/" + k.Name
	}
	return string(k.Scope) + "/" + k.ScopeID + "/" + k.Name
}

// Tokens.

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)

type tokenJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       Role       `json:"role"`
	Token      string     `json:"token,omitempty"` // only when created
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// toToken converts a token without its secret, which is not stored.
func toToken(t Token) tokenJSON {
	return tokenJSON{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt.UTC(), LastUsedAt: utc(t.LastUsedAt)}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req struct {
		Name string `json:"name"`
		Role Role   `json:"role"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	if !tokenName.MatchString(req.Name) || len(req.Name) > maxNameLen {
		return invalidf("token name %q: letters, digits, ., _, @ and -, at most %d", req.Name, maxNameLen)
	}
	if !req.Role.Valid() {
		return invalidf("role %q is not one of viewer, developer, admin", req.Role)
	}
	secret := NewToken()
	t, err := s.storeToken(r.Context(), p, Token{Name: req.Name, Role: req.Role, Hash: HashToken(secret)})
	if err != nil {
		return fmt.Errorf("token %q: %w", req.Name, err)
	}
	out := toToken(t)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, offset, err := pageParams(r)
	if err != nil {
		return err
	}
	all, err := s.tokens.List(r.Context())
	if err != nil {
		return err
	}
	page, next := paginate(all, limit, offset)
	writeJSON(w, http.StatusOK, list[tokenJSON]{Items: mapItems(page, toToken), Next: next})
	return nil
}

// storeToken creates t with its token.create audit entry by p: in one
// transaction if the token store is an AuditedTokenStore.
func (s *Server) storeToken(ctx context.Context, p *principal, t Token) (Token, error) {
	e := auditEntry{"token.create", "token", "", map[string]string{"name": t.Name, "role": string(t.Role)}}
	at, ok := s.tokens.(AuditedTokenStore)
	if !ok {
		t, err := s.tokens.Create(ctx, t)
		if err == nil {
			e.resourceID = t.ID
			s.audit(ctx, p, e)
		}
		return t, err
	}
	se, err := e.by(p)
	if err != nil {
		return Token{}, err
	}
	return at.CreateAudited(ctx, t, se)
}

// dropToken deletes t with its token.delete audit entry by p: in one
// transaction if the token store is an AuditedTokenStore.
func (s *Server) dropToken(ctx context.Context, p *principal, t Token) error {
	e := auditEntry{"token.delete", "token", t.ID, map[string]string{"name": t.Name, "role": string(t.Role)}}
	at, ok := s.tokens.(AuditedTokenStore)
	if !ok {
		err := s.tokens.Delete(ctx, t.ID)
		if err == nil {
			s.audit(ctx, p, e)
		}
		return err
	}
	se, err := e.by(p)
	if err != nil {
		return err
	}
	return at.DeleteAudited(ctx, t.ID, se)
}

// deleteToken deletes a token, but not the last admin token, which would
// leave nobody able to manage tokens.
func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	all, err := s.tokens.List(r.Context())
	if err != nil {
		return err
	}
	var victim *Token
	admins := 0
	for i, t := range all {
		if t.Role == RoleAdmin {
			admins++
		}
		if t.ID == id {
			victim = &all[i]
		}
	}
	if victim == nil {
		return fmt.Errorf("token %q: %w", id, store.ErrNotFound)
	}
	if victim.Role == RoleAdmin && admins == 1 {
		return errorf(http.StatusConflict, codeConflict, "token %q is the last admin token", victim.Name)
	}
	if err := s.dropToken(r.Context(), p, *victim); err != nil {
		return fmt.Errorf("token %q: %w", id, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Audit.

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, _ *principal) error {
	limit, err := limitParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.AuditFilter{Actor: q.Get("actor"), ResourceType: q.Get("resource_type"), ResourceID: q.Get("resource_id"), Limit: limit + 1}
	if c := q.Get("cursor"); c != "" {
		v, ok := decodeCursor(c, "a")
		if ok {
			f.Before, err = strconv.ParseInt(v, 10, 64)
		}
		if !ok || err != nil {
			return invalidf("cursor %q is not one this list gave", c)
		}
	}
	entries, err := s.store.Audit().List(r.Context(), f)
	if err != nil {
		return err
	}
	next := ""
	if len(entries) > limit {
		entries = entries[:limit]
		next = encodeCursor("a", strconv.FormatInt(entries[len(entries)-1].ID, 10))
	}
	for i := range entries {
		entries[i].Time = entries[i].Time.UTC()
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, list[store.AuditEntry]{Items: entries, Next: next})
	return nil
}
