package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// Role is what a token may do.
type Role string

// Roles, from least to most: a viewer reads and subscribes; a developer
// also changes pipelines, runs, jobs, templates, secrets and drains agents;
// an admin also manages tokens, reads the audit log and deregisters agents.
const (
	RoleViewer    Role = "viewer"
	RoleDeveloper Role = "developer"
	RoleAdmin     Role = "admin"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleDeveloper:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r.rank() > 0 }

func (r Role) atLeast(min Role) bool { return r.rank() >= min.rank() }

// Token is a stored API token: never the token itself, only its hash.
type Token struct {
	ID         string
	Name       string // unique; the actor of its audit entries
	Role       Role
	Hash       string // HashToken of the token: SHA-256, lower-case hex
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

// TokenStore keeps API tokens. Its methods are safe for concurrent use.
// Errors wrap the store's sentinels.
type TokenStore interface {
	// Create stores t, setting its ID (when empty) and CreatedAt.
	// ErrConflict if its name or hash is taken.
	Create(ctx context.Context, t Token) (Token, error)
	// GetByHash returns the token with the hash; ErrNotFound if none.
	GetByHash(ctx context.Context, hash string) (Token, error)
	// List returns all tokens by name.
	List(ctx context.Context) ([]Token, error)
	// Delete deletes a token; ErrNotFound if there is none with the ID.
	Delete(ctx context.Context, id string) error
	// Touch sets a token's LastUsedAt.
	Touch(ctx context.Context, id string, at time.Time) error
}

// AuditedTokenStore is a TokenStore that writes the audit entry of a
// token's creation or deletion in the change's transaction. When
// Config.Tokens is one, no token is created or deleted through the API
// without its entry; else the entry is written after the change.
type AuditedTokenStore interface {
	TokenStore
	// CreateAudited is Create that records e, its ResourceID set to the
	// new token's ID, in the same transaction.
	CreateAudited(ctx context.Context, t Token, e store.AuditEntry) (Token, error)
	// DeleteAudited is Delete that records e in the same transaction.
	DeleteAudited(ctx context.Context, id string, e store.AuditEntry) error
}

// TokenPrefix starts every token, so that secret scanners know them.
const TokenPrefix = "oxt_"

// NewToken returns a new random token: TokenPrefix and 32 random bytes in
// unpadded base64url.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashToken returns what a TokenStore keeps of a token. Looking a token up
// by its hash compares no secret bytes, so timing reveals nothing.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// principal is the caller of a request: the token it presented.
type principal struct {
	TokenID string
	Name    string
	Role    Role
}

// touchEvery bounds how often a token's LastUsedAt is written.
const touchEvery = 60 // seconds

// authenticate returns the caller of r from its bearer token, or from the
// token query parameter on the WebSocket endpoint, where browsers cannot
// set headers.
func (s *Server) authenticate(r *http.Request) (*principal, error) {
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return nil, errorf(http.StatusUnauthorized, codeUnauthorized, "the Authorization header must be \"Bearer <token>\"")
		}
		tok = strings.TrimSpace(rest)
	} else if r.URL.Path == wsPath {
		tok = r.URL.Query().Get("token")
	}
	if tok == "" {
		return nil, errorf(http.StatusUnauthorized, codeUnauthorized, "missing API token (Authorization: Bearer <token>)")
	}
	if s.tokens == nil {
		return nil, errorf(http.StatusUnauthorized, codeUnauthorized, "invalid API token")
	}
	t, err := s.tokens.GetByHash(r.Context(), HashToken(tok))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(http.StatusUnauthorized, codeUnauthorized, "invalid API token")
	}
	if err != nil {
		return nil, fmt.Errorf("look up token: %w", err)
	}
	s.touch(r.Context(), t)
	return &principal{TokenID: t.ID, Name: t.Name, Role: t.Role}, nil
}

// touch records that t was used, at most once a minute per token (and
// per server), so that reads do not all become writes.
func (s *Server) touch(ctx context.Context, t Token) {
	now := time.Now().UTC()
	if t.LastUsedAt != nil && now.Sub(*t.LastUsedAt) < touchEvery*time.Second {
		return
	}
	s.touchMu.Lock()
	last := s.touched[t.ID]
	due := now.Unix()-last >= touchEvery
	if due {
		if len(s.touched) > 10000 {
			clear(s.touched)
		}
		s.touched[t.ID] = now.Unix()
	}
	s.touchMu.Unlock()
	if !due {
		return
	}
	if err := s.tokens.Touch(ctx, t.ID, now); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.WarnContext(ctx, "cannot record token use", "token", t.Name, "err", err)
	}
}

// AdminTokenFile is the file in the data directory where Bootstrap writes
// a generated admin token.
const AdminTokenFile = "admin-token"

// Bootstrap makes sure that an admin token exists. When there is none, it
// stores envToken (OXIDE_ADMIN_TOKEN's value) as the admin token if it is
// set, and returns "" (the operator knows it); else it generates a token,
// writes it to dataDir/admin-token (mode 0600) and returns it, for the
// caller to print once. With an admin token present it does nothing and
// returns "".
func Bootstrap(ctx context.Context, tokens TokenStore, dataDir, envToken string) (string, error) {
	all, err := tokens.List(ctx)
	if err != nil {
		return "", fmt.Errorf("bootstrap admin token: %w", err)
	}
	for _, t := range all {
		if t.Role == RoleAdmin {
			return "", nil
		}
	}
	tok, generated := strings.TrimSpace(envToken), false
	if tok == "" {
		tok, generated = NewToken(), true
	} else if len(tok) < 16 {
		return "", errors.New("bootstrap admin token: OXIDE_ADMIN_TOKEN is shorter than 16 characters")
	}
	t := Token{Name: "admin", Role: RoleAdmin, Hash: HashToken(tok)}
	_, err = tokens.Create(ctx, t)
	if errors.Is(err, store.ErrConflict) { // a non-admin token is named admin
		t.Name = "admin-" + strings.ToLower(NewToken()[len(TokenPrefix):][:6])
		_, err = tokens.Create(ctx, t)
	}
	if err != nil {
		return "", fmt.Errorf("bootstrap admin token: %w", err)
	}
	if !generated {
		return "", nil
	}
	if err := writePrivate(filepath.Join(dataDir, AdminTokenFile), []byte(tok+"\n")); err != nil {
		return "", fmt.Errorf("bootstrap admin token: %w", err)
	}
	return tok, nil
}

// writePrivate replaces path with data, mode 0600 from the start.
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".admin-token-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
