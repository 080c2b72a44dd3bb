package agentsvc_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// bundle is the agent service on a real TLS listener on loopback, over a
// real scheduler and SQLite store.
type bundle struct {
	store store.Store
	svc   *scheduler.Service
	srv   *agentsvc.Server
	ca    *pki.CA
	addr  string
	live  *recorder
	loops *loops
}

type options struct {
	agentTimeout time.Duration
	now          func() time.Time // the server's clock (Config.Now)
	lease        time.Duration
	control      func(agentsvc.Control) agentsvc.Control // wraps the scheduler
}

func setup(t *testing.T) *bundle { return setupWith(t, options{}) }

func setupWith(t *testing.T, o options) *bundle {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if o.lease == 0 {
		o.lease = 30 * time.Second
	}
	svc := scheduler.New(scheduler.Config{Store: st, Lease: o.lease, AgentTimeout: o.agentTimeout})
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServerCert([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	live := &recorder{}
	var ctl agentsvc.Control = svc
	if o.control != nil {
		ctl = o.control(svc)
	}
	loops := &loops{Control: ctl}
	srv, err := agentsvc.New(agentsvc.Config{
		Store: st, Control: loops, CA: ca, Certificate: cert, Live: live,
		Poll: 50 * time.Millisecond, KeepAlive: time.Minute, Now: o.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sctx, stopSweeps := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() { defer close(swept); svc.Run(sctx, 50*time.Millisecond) }()
	t.Cleanup(func() {
		stopSweeps()
		<-swept
		stop, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		srv.Stop(stop)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &bundle{store: st, svc: svc, srv: srv, ca: ca, addr: ln.Addr().String(), live: live, loops: loops}
}

// loops counts the rounds of the sessions' dispatch loops: each begins
// with a call of Control.Queued, then places queued jobs on the agents' free
// slots and queues a RunJob for each job placed.
type loops struct {
	agentsvc.Control
	n atomic.Int64
}

func (l *loops) Queued() <-chan struct{} {
	l.n.Add(1)
	return l.Control.Queued()
}

// dispatched waits until a dispatch loop has made a whole round that began
// after the call: the round that began with the next call of Queued ended
// when the one after began. Any RunJob for what the store held at the call
// (a job queued, a slot freed, an agent drained) is then queued on the
// session, to be sent before what the session queues later (see none).
// The round may be any session's: call it with one agent connected.
func (b *bundle) dispatched(t *testing.T) {
	t.Helper()
	n := b.loops.n.Load()
	eventually(t, "a round of the dispatch loop", func() bool { return b.loops.n.Load() >= n+2 })
}

// recorder is a scheduler.Publisher that keeps what it is given.
type recorder struct {
	mu  sync.Mutex
	msg []published
}

type published struct {
	subject string
	payload []byte
}

func (r *recorder) Publish(subject string, payload []byte) {
	r.mu.Lock()
	r.msg = append(r.msg, published{subject, payload})
	r.mu.Unlock()
}

func (r *recorder) all() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msg)
}

// dial opens a client connection presenting cert (none if nil).
func (b *bundle) dial(t *testing.T, cert *tls.Certificate) agentrpc.AgentClient {
	t.Helper()
	cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(b.ca.Pool(), cert, "127.0.0.1"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return agentrpc.NewAgentClient(cc)
}

// token makes a bootstrap token as an admin would.
func (b *bundle) token(t *testing.T, labels ...string) string {
	t.Helper()
	tok, _, err := b.srv.CreateToken(context.Background(), 10*time.Minute, labels, "root")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// identity is what an agent keeps after registering.
type identity struct {
	id   string
	cert tls.Certificate
	resp *agentrpc.RegisterResponse
}

// register registers an agent with a new token.
func (b *bundle) register(t *testing.T, req *agentrpc.RegisterRequest) *identity {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if req.Csr == nil {
		if req.Csr, err = pki.NewCSR(key, req.Name); err != nil {
			t.Fatal(err)
		}
	}
	if req.Token == "" {
		req.Token = b.token(t)
	}
	resp, err := b.dial(t, nil).Register(context.Background(), req)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	keyPEM, err := pki.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(resp.Certificate, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &identity{id: resp.AgentId, cert: cert, resp: resp}
}

// agent is a fake agent: a raw client of the protocol.
type agent struct {
	id     string
	stream grpc.BidiStreamingClient[agentrpc.AgentMessage, agentrpc.ServerMessage]
	cancel context.CancelFunc
	in     chan *agentrpc.ServerMessage // closed when the stream ends, with err set
	err    error
	held   []*agentrpc.ServerMessage // received, not yet expected
	seq    uint64
}

// connect opens a stream as id and says hello.
func (b *bundle) connect(t *testing.T, id *identity, hello *agentrpc.Hello) *agent {
	t.Helper()
	a := b.open(t, &id.cert)
	a.id = id.id
	a.send(t, &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Hello{Hello: hello}})
	eventually(t, "the agent to be connected", func() bool { return slices.Contains(b.srv.Connected(), id.id) })
	return a
}

// open opens a stream presenting cert, without saying anything.
func (b *bundle) open(t *testing.T, cert *tls.Certificate) *agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := b.dial(t, cert).Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a := &agent{stream: st, cancel: cancel, in: make(chan *agentrpc.ServerMessage, 1000), seq: 100}
	t.Cleanup(a.close)
	go func() {
		defer close(a.in)
		for {
			m, err := st.Recv()
			if err != nil {
				a.err = err
				return
			}
			a.in <- m
		}
	}()
	return a
}

func (a *agent) close() { a.cancel() }

func (a *agent) send(t *testing.T, m *agentrpc.AgentMessage) {
	t.Helper()
	if err := a.stream.Send(m); err != nil {
		t.Fatalf("send %T: %v", m.Msg, err)
	}
}

// next returns the next batch_seq.
func (a *agent) next() uint64 { a.seq++; return a.seq }

// expect waits for a message that match accepts, keeping the others for
// later expectations.
func (a *agent) expect(t *testing.T, what string, match func(*agentrpc.ServerMessage) bool) *agentrpc.ServerMessage {
	t.Helper()
	if i := slices.IndexFunc(a.held, match); i >= 0 {
		m := a.held[i]
		a.held = slices.Delete(a.held, i, i+1)
		return m
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-a.in:
			if !ok {
				t.Fatalf("stream ended waiting for %s: %v", what, a.err)
			}
			if match(m) {
				return m
			}
			a.held = append(a.held, m)
		case <-deadline:
			t.Fatalf("no %s in 10s; got %v", what, a.held)
		}
	}
}

// sync makes a round trip through the session's handler, which processes
// the agent's messages one by one, in order: it sends a step update that
// the server drops (it names no job) and acknowledges, and waits for the
// Ack. A session sends its messages in the order it queues them, so what
// it queued before it handled the update (by the handler, or by dispatch
// before a round that dispatched saw end) came before the Ack, and is held.
func (a *agent) sync(t *testing.T) {
	t.Helper()
	seq := a.next()
	a.send(t, &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Step{Step: &agentrpc.StepUpdate{BatchSeq: seq}}})
	a.expectAck(t, seq)
}

// none checks that no message that match accepts came before a round trip
// through the handler (sync).
func (a *agent) none(t *testing.T, what string, match func(*agentrpc.ServerMessage) bool) {
	t.Helper()
	a.sync(t)
	if i := slices.IndexFunc(a.held, match); i >= 0 {
		t.Fatalf("got %s: %v", what, a.held[i])
	}
}

// ended waits for the stream to end and returns its error.
func (a *agent) ended(t *testing.T) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-a.in:
			if !ok {
				return a.err
			}
		case <-deadline:
			t.Fatal("the stream did not end in 10s")
		}
	}
}

func (a *agent) expectRun(t *testing.T) *agentrpc.RunJob {
	t.Helper()
	return a.expect(t, "RunJob", func(m *agentrpc.ServerMessage) bool { return m.GetRun() != nil }).GetRun()
}

func (a *agent) expectCancel(t *testing.T, jobID string) *agentrpc.CancelJob {
	t.Helper()
	return a.expect(t, "CancelJob of "+jobID, func(m *agentrpc.ServerMessage) bool { return m.GetCancel().GetJobId() == jobID }).GetCancel()
}

func (a *agent) expectAck(t *testing.T, upTo uint64) {
	t.Helper()
	a.expect(t, fmt.Sprintf("Ack up to %d", upTo), func(m *agentrpc.ServerMessage) bool {
		return m.GetAck() != nil && m.GetAck().UpTo >= upTo
	})
}

func isRun(m *agentrpc.ServerMessage) bool { return m.GetRun() != nil }

// submit queues a job submitted directly.
func (b *bundle) submit(t *testing.T, name string, labels ...string) store.Job {
	t.Helper()
	j, err := b.svc.SubmitJob(context.Background(), jobspec.Spec{Name: name, Command: "echo " + name, Labels: labels}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (b *bundle) job(t *testing.T, id string) store.Job {
	t.Helper()
	j, err := b.store.Jobs().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (b *bundle) agentStatus(t *testing.T, id string) store.AgentStatus {
	t.Helper()
	a, err := b.store.Agents().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Status
}

// events returns the outbox events of a type about aggregateID.
func (b *bundle) events(t *testing.T, typ, aggregateID string) []store.Event {
	t.Helper()
	evs, err := b.store.Outbox().Pending(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Event
	for _, e := range evs {
		if e.Type == typ && e.AggregateID == aggregateID {
			out = append(out, e)
		}
	}
	return out
}

func payload(t *testing.T, e store.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(e.Payload, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// eventually polls cond until it holds, failing the test after 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Message builders.

func hello(capacity int32, running ...*agentrpc.Lease) *agentrpc.Hello {
	return &agentrpc.Hello{Version: "test", Capacity: capacity, Running: running}
}

func heartbeat(running ...string) *agentrpc.AgentMessage {
	return &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Heartbeat{Heartbeat: &agentrpc.Heartbeat{RunningJobs: running}}}
}

func accepted(l *agentrpc.Lease) *agentrpc.AgentMessage {
	return &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Accepted{Accepted: &agentrpc.JobAccepted{Lease: l}}}
}

func result(seq uint64, l *agentrpc.Lease, status string) *agentrpc.AgentMessage {
	return &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Result{Result: &agentrpc.JobResult{
		BatchSeq: seq, Lease: l, Status: status,
		Steps: []*agentrpc.StepResult{{Status: status, ExitCode: 0, Attempts: 1, DurationMs: 3}},
	}}}
}
