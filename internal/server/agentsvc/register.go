package agentsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

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
// expired is refused with Unauthenticated; every refusal is audited, with
// its reason and never the token.
func (s *Server) Register(ctx context.Context, req *agentrpc.RegisterRequest) (*agentrpc.RegisterResponse, error) {
	remote := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	log := s.log.With("remote", remote, "name", req.GetName())
	if req.GetToken() == "" {
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
		s.rejected(ctx, log, tok.ID, reason, req, remote)
		return nil, status.Errorf(codes.Unauthenticated, "bootstrap token refused: %s", reason)
	}
	// From here on the token is spent: a failure costs the agent its token.
	fail := func(code codes.Code, reason string) error {
		s.rejected(ctx, log, tok.ID, reason, req, remote)
		return status.Errorf(code, "registration refused: %s (the token is spent)", reason)
	}
	if err := pki.CheckLabels(req.GetLabels()); err != nil {
		return nil, fail(codes.InvalidArgument, err.Error())
	}
	name := strings.TrimSpace(req.GetName())
	if name == "" {
		name = "agent-" + agentID[:8]
	}
	if len(name) > maxAgentName || req.GetCapacity() < 0 || req.GetCapacity() > maxAgentCapacity {
		return nil, fail(codes.InvalidArgument, fmt.Sprintf("want a name of at most %d bytes and a capacity from 0 to %d", maxAgentName, maxAgentCapacity))
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

// rejected audits a refused registration; tokenID is empty for an unknown
// token.
func (s *Server) rejected(ctx context.Context, log *slog.Logger, tokenID, reason string, req *agentrpc.RegisterRequest, remote string) {
	log.Warn("agent registration refused", "reason", reason, "token_id", tokenID)
	e := auditEntry(actorToken, actionRejected, "bootstrap_token", tokenID, map[string]any{
		"reason": reason, "name": req.GetName(), "remote": remote,
	})
	// The refusal is recorded even when the caller gave up.
	if _, err := s.store.Audit().Record(context.WithoutCancel(ctx), e); err != nil {
		log.Error("audit a refused registration", "err", err)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
