package agentsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/store"
)

// Audit actors and actions of registration.
const (
	actorToken       = "bootstrap-token"
	actionRegister   = "agent.register"
	actionRejected   = "agent.register_rejected"
	maxAgentName     = 100
	maxAgentCapacity = 1000
	maxToken         = 256
	maxAgentField    = 64       // version, os, arch
	maxCSR           = 16 << 10 // PEM
)

// Reasons a bootstrap token is rejected, as audited and answered.
const (
	reasonUnknown = "unknown token"
	reasonSpent   = "token already used"
	reasonExpired = "token expired"
)

// Register spends the request's bootstrap token (whatever happens next),
// signs the agent's CSR with the CA and records the agent, with the
// token's labels and those it asks for. A token that is unknown, spent or
// expired is refused with Unauthenticated, and a field out of its bounds
// (checkRegister) with InvalidArgument before the token is looked up.
// Every refusal is audited, with its reason and never the token or an
// oversized field; a peer refused too often is refused with
// ResourceExhausted, unaudited, until its refusals.Limiter allows again.
func (s *Server) Register(ctx context.Context, req *agentrpc.RegisterRequest) (*agentrpc.RegisterResponse, error) {
	remote, host := "", ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
		host = remote
		if h, _, err := net.SplitHostPort(remote); err == nil {
			host = h
		}
	}
	if !s.refusals.allowed(host, s.cfg.Now()) {
		s.log.Debug("agent registration refused: too many refusals", "remote", remote)
		return nil, status.Error(codes.ResourceExhausted, "too many refused registrations from this address: try again later")
	}
	if err := checkRegister(req); err != nil {
		s.refusals.refused(host, s.cfg.Now())
		s.rejected(ctx, s.log.With("remote", remote), "", err.Error(), nil, remote)
		return nil, status.Errorf(codes.InvalidArgument, "registration refused: %v", err)
	}
	log := s.log.With("remote", remote, "name", req.GetName())
	if req.GetToken() == "" {
		s.refusals.refused(host, s.cfg.Now())
		return nil, status.Error(codes.Unauthenticated, "a bootstrap token is required")
	}
	agentID := store.NewID()
	tok, err := s.store.BootstrapTokens().Spend(ctx, pki.HashToken(req.GetToken()), agentID)
	if err != nil {
		reason := ""
		switch {
		case errors.Is(err, store.ErrNotFound):
			reason = reasonUnknown
		case errors.Is(err, store.ErrConflict) && tok.UsedAt != nil:
			reason = reasonSpent
		case errors.Is(err, store.ErrConflict):
			reason = reasonExpired
		default:
			log.Error("register: spend the token", "err", err)
			return nil, rpcError(err)
		}
		s.refusals.refused(host, s.cfg.Now())
		s.rejected(ctx, log, tok.ID, reason, req, remote)
		return nil, status.Errorf(codes.Unauthenticated, "bootstrap token refused: %s", reason)
	}
	// From here on the token is spent: a failure costs the agent its token.
	fail := func(code codes.Code, reason string) error {
		s.refusals.refused(host, s.cfg.Now())
		s.rejected(ctx, log, tok.ID, reason, req, remote)
		return status.Errorf(code, "registration refused: %s (the token is spent)", reason)
	}
	name := strings.TrimSpace(req.GetName())
	if name == "" {
		name = "agent-" + agentID[:8]
	}
	cert, err := s.cfg.CA.SignCSR(req.GetCsr(), agentID)
	if errors.Is(err, pki.ErrNoKey) {
		return nil, fail(codes.FailedPrecondition, "this server has the CA's certificate but not its key: it cannot sign agents' certificates")
	}
	if err != nil {
		return nil, fail(codes.InvalidArgument, err.Error())
	}
	a := store.Agent{
		ID: agentID, Name: name, Labels: pki.MergeLabels(tok.Labels, req.GetLabels()),
		Version: req.GetVersion(), OS: req.GetOs(), Arch: req.GetArch(), Capacity: int(req.GetCapacity()),
	}
	err = s.store.InTx(ctx, func(tx store.Tx) (err error) {
		if a, err = tx.Agents().Register(ctx, a); err != nil {
			return err
		}
		_, err = tx.Audit().Record(ctx, auditEntry("agent:"+a.ID, actionRegister, "agent", a.ID, map[string]any{
			"name": a.Name, "labels": a.Labels, "token_id": tok.ID, "remote": remote,
			"version": a.Version, "os": a.OS, "arch": a.Arch, "capacity": a.Capacity,
		}))
		return err
	})
	if err != nil {
		log.Error("register: record the agent", "err", err)
		return nil, rpcError(err)
	}
	log.Info("agent registered", "agent_id", a.ID, "labels", a.Labels)
	return &agentrpc.RegisterResponse{AgentId: a.ID, Certificate: cert, CaCertificate: s.cfg.CA.CertPEM, Labels: a.Labels}, nil
}

// checkRegister reports a field of req out of its bounds, without quoting
// it: the token, name, version, os and arch by length, the labels by
// pki.CheckLabels, the CSR by size and the capacity by value.
func checkRegister(req *agentrpc.RegisterRequest) error {
	for _, f := range []struct {
		name   string
		n, max int
	}{
		{"token", len(req.GetToken()), maxToken},
		{"name", len(strings.TrimSpace(req.GetName())), maxAgentName},
		{"version", len(req.GetVersion()), maxAgentField},
		{"os", len(req.GetOs()), maxAgentField},
		{"arch", len(req.GetArch()), maxAgentField},
		{"csr", len(req.GetCsr()), maxCSR},
	} {
		if f.n > f.max {
			return fmt.Errorf("%s: at most %d bytes, not %d", f.name, f.max, f.n)
		}
	}
	if len(req.GetLabels()) > pki.MaxLabels {
		return fmt.Errorf("labels: at most %d, not %d", pki.MaxLabels, len(req.GetLabels()))
	}
	for _, l := range req.GetLabels() {
		if len(l) > pki.MaxLabelLen {
			return fmt.Errorf("label: at most %d bytes, not %d", pki.MaxLabelLen, len(l))
		}
	}
	if err := pki.CheckLabels(req.GetLabels()); err != nil {
		return err
	}
	if c := req.GetCapacity(); c < 0 || c > maxAgentCapacity {
		return fmt.Errorf("capacity %d: want 0 to %d", c, maxAgentCapacity)
	}
	return nil
}

// rejected audits a refused registration; tokenID is empty for an unknown
// token, req nil for one refused before its fields were checked.
func (s *Server) rejected(ctx context.Context, log *slog.Logger, tokenID, reason string, req *agentrpc.RegisterRequest, remote string) {
	log.Warn("agent registration refused", "reason", reason, "token_id", tokenID)
	details := map[string]any{"reason": reason, "remote": remote}
	if req != nil {
		details["name"] = req.GetName()
	}
	e := auditEntry(actorToken, actionRejected, "bootstrap_token", tokenID, details)
	// The refusal is recorded even when the caller gave up.
	if _, err := s.store.Audit().Record(context.WithoutCancel(ctx), e); err != nil {
		log.Error("audit a refused registration", "err", err)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Limits of refused registrations: each address may be refused refusalBurst
// times at once, then once per refusalEvery; refusals remembers at most
// maxRefusers addresses.
const (
	refusalBurst = 10
	refusalEvery = 6 * time.Second
	maxRefusers  = 4096
)

// refusals is a token bucket of refused registrations per peer address;
// safe for concurrent use.
type refusals struct {
	mu sync.Mutex
	by map[string]*rate.Limiter
}

// allowed reports whether host may be refused once more at now, that is,
// whether its request is heard at all.
func (r *refusals) allowed(host string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.by[host]
	return l == nil || l.TokensAt(now) >= 1
}

// refused counts a refusal of host at now. When maxRefusers addresses are
// known, those whose bucket is full again are forgotten, or, if none is,
// one at random.
func (r *refusals) refused(host string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.by[host]
	if l == nil {
		if r.by == nil {
			r.by = map[string]*rate.Limiter{}
		}
		if len(r.by) >= maxRefusers {
			for h, l := range r.by {
				if l.TokensAt(now) >= refusalBurst {
					delete(r.by, h)
				}
			}
			for h := range r.by {
				if len(r.by) < maxRefusers {
					break
				}
				delete(r.by, h)
			}
		}
		l = rate.NewLimiter(rate.Every(refusalEvery), refusalBurst)
		r.by[host] = l
	}
	l.AllowN(now, 1)
}
