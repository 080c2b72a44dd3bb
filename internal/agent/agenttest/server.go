// Package agenttest is a test double of the Oxide server's agent endpoint:
// an agentrpc.AgentServer on a real TLS listener. It issues client
// certificates from a CA of its own for one-time tokens, knows agents by
// their verified client certificate (CN = agent ID), records everything
// agents send, acknowledges reliable messages (or not, when a test wants a
// backlog), and lets a test push jobs, cancels and drains, and break
// connections. It stores nothing and schedules nothing.
package agenttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Server is the test double. Its methods are safe for concurrent use.
type Server struct {
	agentrpc.UnimplementedAgentServer

	Addr  string // 127.0.0.1:PORT
	CAPEM []byte // the CA that signs the server's and the agents' certificates

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	srv   *grpc.Server

	mu        sync.Mutex
	changed   chan struct{}
	tokens    map[string][]string // unspent token → labels
	agents    map[string]*agentrpc.RegisterRequest
	sessions  map[string]*session // current session of each agent
	opened    map[string]int      // sessions opened by each agent
	received  []Received
	manualAck bool
	refuse    bool
	nextAgent int
}

// Received is a message an agent sent.
type Received struct {
	AgentID string
	Session int // 1 for the agent's first session, and so on
	Msg     *agentrpc.AgentMessage
}

type session struct {
	n      int
	stream agentrpc.Agent_ConnectServer
	sendMu sync.Mutex
	drop   chan struct{}
	last   uint64 // highest batch_seq received
}

func (s *session) send(m *agentrpc.ServerMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(m)
}

// New starts a server on a free port of 127.0.0.1.
func New() (*Server, error) {
	s := &Server{
		changed: make(chan struct{}), tokens: map[string][]string{}, agents: map[string]*agentrpc.RegisterRequest{},
		sessions: map[string]*session{}, opened: map[string]int{},
	}
	var err error
	if s.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agenttest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &s.caKey.PublicKey, s.caKey)
	if err != nil {
		return nil, err
	}
	s.ca, _ = x509.ParseCertificate(der)
	s.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err = s.sign(&x509.Certificate{
		Subject: pkix.Name{CommonName: "agenttest server"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.ca)
	tc := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientCAs:    pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.Addr = ln.Addr().String()
	s.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)),
		// As the real server: agents may ping every 5s.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	agentrpc.RegisterAgentServer(s.srv, s)
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server at once.
func (s *Server) Close() { s.srv.Stop() }

func (s *Server) sign(tmpl *x509.Certificate, pub any) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	return x509.CreateCertificate(rand.Reader, tmpl, s.ca, pub, s.caKey)
}

// AddToken makes a one-time bootstrap token that gives its agent labels.
func (s *Server) AddToken(token string, labels ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = labels
}

// SetManualAck stops (true) or resumes (false) acknowledging each reliable
// message as it arrives; Ack acknowledges by hand.
func (s *Server) SetManualAck(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manualAck = on
}

// Register spends the token and signs the agent's CSR: CN is the new agent
// ID, for client authentication.
func (s *Server) Register(ctx context.Context, req *agentrpc.RegisterRequest) (*agentrpc.RegisterResponse, error) {
	s.mu.Lock()
	labels, ok := s.tokens[req.Token]
	delete(s.tokens, req.Token)
	if ok {
		s.nextAgent++
	}
	id := fmt.Sprintf("agent-%d", s.nextAgent)
	s.mu.Unlock()
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "unknown or spent bootstrap token")
	}
	block, _ := pem.Decode(req.Csr)
	if block == nil {
		return nil, status.Error(codes.InvalidArgument, "csr: no PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil, status.Error(codes.InvalidArgument, "csr: invalid")
	}
	der, err := s.sign(&x509.Certificate{Subject: pkix.Name{CommonName: id}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, csr.PublicKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	labels = append(slices.Clone(labels), req.Labels...)
	s.mu.Lock()
	s.agents[id] = req
	s.mu.Unlock()
	s.signal()
	return &agentrpc.RegisterResponse{
		AgentId: id, Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), CaCertificate: s.CAPEM, Labels: labels,
	}, nil
}

// Connect holds an agent's session: hello first, then whatever comes,
// until the agent goes or the test drops the session.
func (s *Server) Connect(stream agentrpc.Agent_ConnectServer) error {
	p, _ := peer.FromContext(stream.Context())
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	id := ti.State.VerifiedChains[0][0].Subject.CommonName
	s.mu.Lock()
	refuse := s.refuse
	s.mu.Unlock()
	if refuse {
		return status.Error(codes.Unavailable, "agenttest: refusing sessions")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "hello first")
	}
	s.mu.Lock()
	s.opened[id]++
	sess := &session{n: s.opened[id], stream: stream, drop: make(chan struct{})}
	if old := s.sessions[id]; old != nil {
		close(old.drop)
	}
	s.sessions[id] = sess
	s.received = append(s.received, Received{id, sess.n, first})
	s.mu.Unlock()
	s.signal()
	defer func() {
		s.mu.Lock()
		if s.sessions[id] == sess {
			delete(s.sessions, id)
		}
		s.mu.Unlock()
		s.signal()
	}()

	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			seq := batchSeq(m)
			s.mu.Lock()
			select {
			case <-sess.drop: // dropped: what still arrives is lost
				s.mu.Unlock()
				continue
			default:
			}
			s.received = append(s.received, Received{id, sess.n, m})
			if seq > sess.last {
				sess.last = seq
			}
			ack := seq != 0 && !s.manualAck
			s.mu.Unlock()
			s.signal()
			if ack {
				sess.send(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Ack{Ack: &agentrpc.Ack{UpTo: seq}}})
			}
		}
	}()
	select {
	case <-sess.drop:
		return status.Error(codes.Unavailable, "agenttest: session dropped")
	case err := <-errc:
		if errors.Is(err, io.EOF) {
			return nil // the agent said goodbye
		}
		return err
	}
}

func batchSeq(m *agentrpc.AgentMessage) uint64 {
	switch {
	case m.GetLogs() != nil:
		return m.GetLogs().BatchSeq
	case m.GetStep() != nil:
		return m.GetStep().BatchSeq
	case m.GetResult() != nil:
		return m.GetResult().BatchSeq
	}
	return 0
}

// ErrNotConnected is returned when the agent has no session.
var ErrNotConnected = errors.New("agenttest: the agent is not connected")

func (s *Server) send(agentID string, m *agentrpc.ServerMessage) error {
	s.mu.Lock()
	sess := s.sessions[agentID]
	s.mu.Unlock()
	if sess == nil {
		return ErrNotConnected
	}
	return sess.send(m)
}

// Push sends a job to the agent.
func (s *Server) Push(agentID string, run *agentrpc.RunJob) error {
	return s.send(agentID, &agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Run{Run: run}})
}

// Cancel cancels a job of the agent.
func (s *Server) Cancel(agentID, jobID, reason string) error {
	return s.send(agentID, &agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Cancel{Cancel: &agentrpc.CancelJob{JobId: jobID, Reason: reason}}})
}

// Drain tells the agent to take no more jobs.
func (s *Server) Drain(agentID string) error {
	return s.send(agentID, &agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Drain{Drain: &agentrpc.Drain{}}})
}

// KeepAlive sends the agent a keep-alive.
func (s *Server) KeepAlive(agentID string) error {
	return s.send(agentID, &agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_KeepAlive{KeepAlive: &agentrpc.KeepAlive{}}})
}

// Ack acknowledges everything received on the agent's current session.
func (s *Server) Ack(agentID string) error {
	s.mu.Lock()
	sess := s.sessions[agentID]
	s.mu.Unlock()
	if sess == nil {
		return ErrNotConnected
	}
	s.mu.Lock()
	upTo := sess.last
	s.mu.Unlock()
	return sess.send(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Ack{Ack: &agentrpc.Ack{UpTo: upTo}}})
}

// Refuse makes Connect fail (true) until Refuse(false), and drops every
// session: the server is unreachable.
func (s *Server) Refuse(on bool) {
	s.mu.Lock()
	s.refuse = on
	s.mu.Unlock()
	if on {
		for _, id := range s.Agents() {
			s.Drop(id)
		}
	}
}

// Drop ends the agent's current session without acknowledging anything
// more, as a lost connection would.
func (s *Server) Drop(agentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[agentID]; sess != nil {
		close(sess.drop)
		delete(s.sessions, agentID)
	}
}

// Connected reports whether the agent has a session.
func (s *Server) Connected(agentID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[agentID] != nil
}

// Sessions returns how many sessions the agent opened.
func (s *Server) Sessions(agentID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened[agentID]
}

// Agents returns the IDs of the agents registered so far.
func (s *Server) Agents() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.agents {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Received returns what agents sent so far, in the order it arrived.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// Changed returns a channel closed at the next message, session or
// registration.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Server) signal() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Lines returns the log lines received for a job, in the order they
// arrived (a resent line arrives again).
func (s *Server) Lines(jobID string) []*agentrpc.LogLine {
	var out []*agentrpc.LogLine
	for _, r := range s.Received() {
		if b := r.Msg.GetLogs(); b != nil && b.Lease.GetJobId() == jobID {
			out = append(out, b.Lines...)
		}
	}
	return out
}

// Result returns the first result received for a job.
func (s *Server) Result(jobID string) *agentrpc.JobResult {
	for _, r := range s.Received() {
		if res := r.Msg.GetResult(); res != nil && res.Lease.GetJobId() == jobID {
			return res
		}
	}
	return nil
}

// Rejected returns the first rejection received for a job.
func (s *Server) Rejected(jobID string) *agentrpc.JobRejected {
	for _, r := range s.Received() {
		if rej := r.Msg.GetRejected(); rej != nil && rej.Lease.GetJobId() == jobID {
			return rej
		}
	}
	return nil
}

// RunJob makes the message that hands agentID a job of run runID (empty
// for a job submitted directly).
func RunJob(agentID, jobID, runID string, attempt int, job spec.Job) *agentrpc.RunJob {
	job.Version = spec.Version
	b, err := json.Marshal(job)
	if err != nil {
		panic(err)
	}
	return &agentrpc.RunJob{
		Lease: &agentrpc.Lease{JobId: jobID, WorkerId: agentID, Attempt: int32(attempt)}, RunId: runID, Job: b,
	}
}
