package agentsvc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/testkit"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tok := b.token(t, "linux", "docker")
	id := b.register(t, &agentrpc.RegisterRequest{
		Token: tok, Name: "builder-1", Labels: []string{"docker", "gpu"}, Version: "1.2.3", Os: "linux", Arch: "amd64", Capacity: 4,
	})

	// The certificate is the agent's, signed by the CA, for client auth.
	certs, err := pki.ParseCerts(id.resp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.ca.VerifyAgent(certs); err != nil || got != id.id {
		t.Fatalf("VerifyAgent = %q, %v; want %q", got, err, id.id)
	}
	if d := time.Until(certs[0].NotAfter); d < 364*24*time.Hour {
		t.Errorf("certificate valid for %s more, want a year", d)
	}
	if string(id.resp.CaCertificate) != string(b.ca.CertPEM) {
		t.Error("the answer does not carry the CA certificate")
	}
	if !slices.Equal(id.resp.Labels, []string{"linux", "docker", "gpu"}) {
		t.Errorf("labels %q, want the token's then the agent's", id.resp.Labels)
	}
	a, err := b.store.Agents().Get(ctx, id.id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "builder-1" || a.Status != store.AgentOnline || a.Capacity != 4 || a.Version != "1.2.3" || a.OS != "linux" ||
		!slices.Equal(a.Labels, id.resp.Labels) {
		t.Errorf("agent %+v", a)
	}
	entries, err := b.store.Audit().List(ctx, store.AuditFilter{ResourceType: "agent", ResourceID: id.id})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Actor != "agent:"+id.id || entries[0].Action != "agent.register" {
		t.Errorf("audit %+v", entries)
	}

	// Reused, unknown and expired tokens are refused, and audited without
	// the token.
	short, hash := pki.NewBootstrapToken()
	shortTok, err := b.store.BootstrapTokens().Create(ctx, store.BootstrapToken{Hash: hash}, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the token to expire", func() bool { return time.Now().After(shortTok.ExpiresAt) })
	for _, tt := range []struct{ token, reason string }{
		{tok, "token already used"},
		{"oxb_nonsense", "unknown token"},
		{short, "token expired"},
	} {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "intruder")
		_, err := b.dial(t, nil).Register(ctx, &agentrpc.RegisterRequest{Token: tt.token, Name: "intruder", Csr: csr})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("register with a %s: %v, want Unauthenticated", tt.reason, err)
		}
		rejected, err := b.store.Audit().List(ctx, store.AuditFilter{Actor: "bootstrap-token"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rejected) == 0 || rejected[0].Action != "agent.register_rejected" || !strings.Contains(string(rejected[0].Details), tt.reason) {
			t.Fatalf("no audit of the refused %s: %+v", tt.reason, rejected)
		}
		if strings.Contains(string(rejected[0].Details), tt.token) {
			t.Errorf("the audit entry holds the token: %s", rejected[0].Details)
		}
	}
	agents, _ := b.store.Agents().List(ctx)
	if len(agents) != 1 {
		t.Errorf("%d agents, want only the registered one", len(agents))
	}
	if _, err := b.dial(t, nil).Register(ctx, &agentrpc.RegisterRequest{Csr: []byte("x")}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("register without a token: %v", err)
	}
}

// TestRegisterSpendsTheToken: a request that fails after the token was
// checked (a bad CSR) still spends it.
func TestRegisterSpendsTheToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t)
	_, err := b.dial(t, nil).Register(context.Background(), &agentrpc.RegisterRequest{Token: tok, Csr: []byte("not a CSR")})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("register with a bad CSR: %v", err)
	}
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "x")
	_, err = b.dial(t, nil).Register(context.Background(), &agentrpc.RegisterRequest{Token: tok, Csr: csr})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("register again: %v", err)
	}
}

// TestRegisterFlood: oversized, unauthenticated registrations (issue 11.6)
// store nothing of their size, and a peer refused too often is refused
// with ResourceExhausted, unaudited, until its bucket refills.
func TestRegisterFlood(t *testing.T) {
	t.Parallel()
	clk := testkit.NewClock()
	b := setupWith(t, options{now: clk.Now})
	ctx := context.Background()
	conn := b.dial(t, nil)
	huge := strings.Repeat("n", 1<<20)
	codesSeen := map[codes.Code]int{}
	for range 50 {
		_, err := conn.Register(ctx, &agentrpc.RegisterRequest{Token: "oxb_bogus", Name: huge, Csr: []byte("x")})
		codesSeen[status.Code(err)]++
	}
	if codesSeen[codes.InvalidArgument] != 10 || codesSeen[codes.ResourceExhausted] != 40 {
		t.Errorf("answers %v, want 10 InvalidArgument then 40 ResourceExhausted", codesSeen)
	}
	entries, err := b.store.Audit().List(ctx, store.AuditFilter{Actor: "bootstrap-token"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 10 {
		t.Errorf("%d audit entries, want one per heard refusal (10)", len(entries))
	}
	for _, e := range entries {
		if len(e.Details) > 512 || strings.Contains(string(e.Details), "nnnn") {
			t.Fatalf("audit entry of %d bytes holds the name: %.200s", len(e.Details), e.Details)
		}
		if !strings.Contains(string(e.Details), "name: at most 100 bytes") {
			t.Errorf("audit entry without the reason: %s", e.Details)
		}
	}
	// Fields are checked before the token: a valid one is not spent by an
	// oversized request.
	tok := b.token(t)
	clk.Advance(time.Hour)
	if _, err := conn.Register(ctx, &agentrpc.RegisterRequest{Token: tok, Name: "x", Os: huge[:65]}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("register with a 65-byte os: %v", err)
	}
	b.register(t, &agentrpc.RegisterRequest{Token: tok, Name: "after"})
}

func TestConnectRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := setup(t) // another server, another CA
	theirs := other.register(t, &agentrpc.RegisterRequest{Name: "stranger"})
	ours := b.register(t, &agentrpc.RegisterRequest{Name: "gone"})
	if err := b.store.Agents().Delete(context.Background(), ours.id); err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*identity{"no certificate": nil, "another CA's certificate": theirs, "a deregistered agent": ours} {
		var a *agent
		if cert == nil {
			a = b.open(t, nil)
		} else {
			a = b.open(t, &cert.cert)
		}
		a.stream.Send(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Hello{Hello: hello(1)}})
		if err := a.ended(t); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	if len(b.srv.Connected()) != 0 {
		t.Errorf("connected: %v", b.srv.Connected())
	}
}

// TestDispatch: a job queued reaches an idle agent at once; its logs
// (one batch sent twice) are stored once, its result finishes it.
func TestDispatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.register(t, &agentrpc.RegisterRequest{Name: "fast", Labels: []string{"linux"}})
	a := b.connect(t, id, hello(1))
	if st := b.agentStatus(t, id.id); st != store.AgentOnline {
		t.Fatalf("status %s, want online", st)
	}
	b.dispatched(t)
	a.none(t, "a RunJob with nothing queued", isRun)

	start := time.Now()
	j := b.submit(t, "hello", "linux")
	run := a.expectRun(t)
	latency := time.Since(start)
	t.Logf("SubmitJob → RunJob: %s", latency)
	if latency > 2*time.Second {
		t.Errorf("RunJob came %s after SubmitJob: it was polled, not pushed", latency)
	}
	l := run.Lease
	if l.JobId != j.ID || l.WorkerId != id.id || l.Attempt != 1 {
		t.Fatalf("lease %v", l)
	}
	var work spec.Job
	if err := json.Unmarshal(run.Job, &work); err != nil {
		t.Fatal(err)
	}
	if len(work.Steps) != 1 || work.Steps[0].Run != "echo hello" || work.Version != spec.Version || work.Environment != nil || run.LocalSecrets != nil {
		t.Errorf("job %+v, local secrets %s", work, run.LocalSecrets)
	}
	eventually(t, "a job.dispatched event", func() bool { return len(b.events(t, "job.dispatched", j.ID)) == 1 })
	// A second job waits: the agent's one slot is taken.
	j2 := b.submit(t, "second", "linux")
	b.dispatched(t)
	a.none(t, "a second RunJob", isRun)

	a.send(t, accepted(l))
	eventually(t, "the job to run", func() bool { return b.job(t, j.ID).State == store.JobRunning })
	eventually(t, "a job.accepted event", func() bool { return len(b.events(t, "job.accepted", j.ID)) == 1 })

	now := timestamppb.Now()
	batch := &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Logs{Logs: &agentrpc.LogBatch{
		BatchSeq: a.next(), Lease: l, Lines: []*agentrpc.LogLine{
			{Seq: 1, StepId: "command", Stream: "stdout", Text: "one", Time: now},
			{Seq: 2, StepId: "command", Stream: "stdout", Text: "two", Time: now},
			{Seq: 3, StepId: "command", Stream: "stderr", Text: "three", Time: now},
		},
	}}}
	a.send(t, batch)
	a.send(t, batch) // resent after a reconnect, say
	a.expectAck(t, batch.GetLogs().BatchSeq)
	lines, err := b.store.Logs().Read(ctx, j.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || lines[0].Text != "one" || lines[2].Stream != "stderr" || !lines[0].Time.Equal(now.AsTime().Truncate(time.Microsecond)) {
		t.Errorf("stored lines %+v", lines)
	}

	seq := a.next()
	a.send(t, &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Step{Step: &agentrpc.StepUpdate{BatchSeq: seq, Lease: l, Index: 0, Status: "running"}}})
	a.expectAck(t, seq)

	seq = a.next()
	a.send(t, result(seq, l, "success"))
	a.expectAck(t, seq)
	if got := b.job(t, j.ID); got.State != store.JobSucceeded {
		t.Fatalf("job %s, want succeeded", got.State)
	}
	// The slot is free: the second job comes.
	if run := a.expectRun(t); run.Lease.JobId != j2.ID {
		t.Errorf("second RunJob is of %s, want %s", run.Lease.JobId, j2.ID)
	}

	// A report about someone else's job is dropped, yet acknowledged.
	seq = a.next()
	a.send(t, &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Logs{Logs: &agentrpc.LogBatch{
		BatchSeq: seq, Lease: &agentrpc.Lease{JobId: j.ID, WorkerId: "someone-else", Attempt: 1},
		Lines: []*agentrpc.LogLine{{Seq: 99, Text: "forged"}},
	}}})
	a.expectAck(t, seq)
	if lines, _ := b.store.Logs().Read(ctx, j.ID, 3, 0); len(lines) != 0 {
		t.Errorf("forged lines stored: %+v", lines)
	}

	// Heartbeats renew the leases and are published live.
	a.send(t, heartbeat(j2.ID))
	eventually(t, "a heartbeat published", func() bool {
		for _, p := range b.live.all() {
			if p.subject == "agent."+id.id+".heartbeat" && strings.Contains(string(p.payload), `"status":"busy"`) {
				return true
			}
		}
		return false
	})
}

// TestCancel: a job cancelled on the server is cancelled on its agent.
func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.register(t, &agentrpc.RegisterRequest{Name: "a"})
	a := b.connect(t, id, hello(1))
	j := b.submit(t, "long")
	run := a.expectRun(t)
	a.send(t, accepted(run.Lease))
	eventually(t, "the job to run", func() bool { return b.job(t, j.ID).State == store.JobRunning })
	if _, err := b.svc.CancelJob(context.Background(), j.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	c := a.expectCancel(t, j.ID)
	if !strings.Contains(c.Reason, "alice") {
		t.Errorf("reason %q", c.Reason)
	}
	// The agent stops it; its result (cancelled) changes nothing.
	seq := a.next()
	a.send(t, result(seq, run.Lease, "cancelled"))
	a.expectAck(t, seq)
	if got := b.job(t, j.ID); got.State != store.JobCancelled || !strings.Contains(got.Error, "alice") {
		t.Errorf("job %s (%s)", got.State, got.Error)
	}
}

// TestLostAgent: an agent that stops heartbeating is lost and its job goes
// back to the queue, for its next attempt on another agent.
func TestLostAgent(t *testing.T) {
	t.Parallel()
	b := setupWith(t, options{agentTimeout: 500 * time.Millisecond})
	silent := b.register(t, &agentrpc.RegisterRequest{Name: "silent"})
	a := b.connect(t, silent, hello(1))
	j := b.submit(t, "job")
	run := a.expectRun(t)
	a.send(t, accepted(run.Lease))
	// No heartbeat from now on.
	eventually(t, "the agent to be lost", func() bool { return b.agentStatus(t, silent.id) == store.AgentLost })
	eventually(t, "the job to be requeued", func() bool { return b.job(t, j.ID).State == store.JobQueued })
	if got := b.job(t, j.ID); got.Error != "agent_lost" || got.WorkerID != "" {
		t.Errorf("requeued job %+v", got)
	}
	if evs := b.events(t, "agent.disconnected", silent.id); len(evs) != 1 || payload(t, evs[0])["reason"] != "timeout" {
		t.Errorf("agent.disconnected events %v", evs)
	}

	// Another agent takes it: attempt 2.
	other := b.register(t, &agentrpc.RegisterRequest{Name: "other"})
	o := b.connect(t, other, hello(1))
	run2 := o.expectRun(t)
	if run2.Lease.JobId != j.ID || run2.Lease.Attempt != 2 {
		t.Fatalf("lease %v, want attempt 2 of %s", run2.Lease, j.ID)
	}
	seq := o.next()
	o.send(t, result(seq, run2.Lease, "success"))
	o.expectAck(t, seq)
	// The silent agent's late result of attempt 1 is not recorded.
	a.send(t, result(a.next(), run.Lease, "failure"))
	a.send(t, heartbeat(j.ID))
	eventually(t, "the job to succeed", func() bool { return b.job(t, j.ID).State == store.JobSucceeded })
	if got := b.job(t, j.ID); got.Attempt != 2 || got.WorkerID != other.id {
		t.Errorf("job %+v", got)
	}
	// Heard from again, the silent agent is online.
	eventually(t, "the silent agent to be back", func() bool { return b.agentStatus(t, silent.id) == store.AgentOnline })
}

// TestCrashedAgent: an agent whose stream broke and that stays silent is
// lost, and its job goes back to the queue; one that held nothing stays
// offline.
func TestCrashedAgent(t *testing.T) {
	t.Parallel()
	b := setupWith(t, options{agentTimeout: 500 * time.Millisecond})
	crashed := b.register(t, &agentrpc.RegisterRequest{Name: "crashed"})
	idle := b.register(t, &agentrpc.RegisterRequest{Name: "idle"})
	a := b.connect(t, crashed, hello(1))
	j := b.submit(t, "job")
	run := a.expectRun(t)
	a.send(t, accepted(run.Lease))
	eventually(t, "the job to run", func() bool { return b.job(t, j.ID).State == store.JobRunning })
	i := b.connect(t, idle, hello(1))
	a.close() // the process dies: its connection breaks
	i.close()
	eventually(t, "the agent to be offline", func() bool { return b.agentStatus(t, crashed.id) == store.AgentOffline })
	if got := b.job(t, j.ID); got.State != store.JobRunning {
		t.Fatalf("job %s right after the disconnect, want it kept", got.State)
	}
	eventually(t, "the agent to be lost", func() bool { return b.agentStatus(t, crashed.id) == store.AgentLost })
	eventually(t, "the job to be requeued", func() bool { return b.job(t, j.ID).State == store.JobQueued })
	if got := b.job(t, j.ID); got.Error != "agent_lost" {
		t.Errorf("requeued job %+v", got)
	}
	// Silent as long, the idle agent stays offline: it holds nothing.
	eventually(t, "the idle agent to be silent", func() bool {
		a, err := b.store.Agents().Get(context.Background(), idle.id)
		return err == nil && time.Since(*a.LastHeartbeatAt) > 500*time.Millisecond
	})
	if err := b.svc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := b.agentStatus(t, idle.id); st != store.AgentOffline {
		t.Errorf("idle agent %s, want offline", st)
	}
}

// TestLostAgentAttempts: an agent that stops heartbeating mid-job is lost
// (agent.lost, agent.disconnected) and its job is handed back with
// agent_lost; attempt 2, on another agent, opens with a system line that
// says why, and both attempts' lines are stored, each with its attempt,
// though each attempt numbers its lines from 1. The lost agent, connecting
// again, is online.
func TestLostAgentAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWith(t, options{agentTimeout: 300 * time.Millisecond})
	logs := func(a *agent, l *agentrpc.Lease, texts ...string) {
		t.Helper()
		batch := &agentrpc.LogBatch{BatchSeq: a.next(), Lease: l}
		for i, text := range texts {
			batch.Lines = append(batch.Lines, &agentrpc.LogLine{
				Seq: int64(l.Attempt)<<32 + int64(i) + 1, Attempt: l.Attempt, StepId: "command", Stream: "stdout", Text: text, Time: timestamppb.Now(),
			})
		}
		a.send(t, &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Logs{Logs: batch}})
		a.expectAck(t, batch.BatchSeq)
	}
	lostID := b.register(t, &agentrpc.RegisterRequest{Name: "lost"})
	a := b.connect(t, lostID, hello(1))
	j := b.submit(t, "job")
	run := a.expectRun(t)
	a.send(t, accepted(run.Lease))
	logs(a, run.Lease, "one", "two")
	// No heartbeat from now on.
	eventually(t, "the agent to be lost", func() bool { return b.agentStatus(t, lostID.id) == store.AgentLost })
	if got := b.job(t, j.ID); got.State != store.JobQueued || got.Error != scheduler.ReasonAgentLost || got.WorkerID != "" {
		t.Errorf("job after its agent was lost: %s %q (worker %q)", got.State, got.Error, got.WorkerID)
	}
	if evs := b.events(t, "agent.lost", lostID.id); len(evs) != 1 {
		t.Errorf("agent.lost events %v, want 1", evs)
	}
	if evs := b.events(t, "agent.disconnected", lostID.id); len(evs) != 1 || payload(t, evs[0])["reason"] != "timeout" {
		t.Errorf("agent.disconnected events %v", evs)
	}

	other := b.register(t, &agentrpc.RegisterRequest{Name: "other"})
	o := b.connect(t, other, hello(1))
	run2 := o.expectRun(t)
	if run2.Lease.Attempt != 2 {
		t.Fatalf("lease %v, want attempt 2", run2.Lease)
	}
	o.send(t, accepted(run2.Lease))
	logs(o, run2.Lease, "one", "two", "three")
	seq := o.next()
	o.send(t, result(seq, run2.Lease, "success"))
	o.expectAck(t, seq)

	lines, err := b.store.Logs().Read(ctx, j.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, fmt.Sprintf("%d %s %s", l.Attempt, l.Stream, l.Text))
	}
	want := []string{"1 stdout one", "1 stdout two", "2 system attempt 2 of 3 after agent lost", "2 stdout one", "2 stdout two", "2 stdout three"}
	if !slices.Equal(got, want) {
		t.Errorf("log\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	a.close()
	b.connect(t, lostID, hello(1))
	eventually(t, "the lost agent, connected again, to be online", func() bool {
		return b.agentStatus(t, lostID.id) == store.AgentOnline
	})
}

// TestReconnect: an agent that reconnects keeps the leases that are still
// current and is told to cancel the stale ones; a stream that ends leaves
// the agent offline with its leases.
func TestReconnect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := b.register(t, &agentrpc.RegisterRequest{Name: "flaky"})
	a := b.connect(t, id, hello(2))
	j1, j2 := b.submit(t, "one"), b.submit(t, "two")
	r1, r2 := a.expectRun(t), a.expectRun(t)
	if r1.Lease.JobId != j1.ID {
		r1, r2 = r2, r1
	}
	a.send(t, accepted(r1.Lease))
	a.send(t, accepted(r2.Lease))
	eventually(t, "the jobs to run", func() bool { return b.job(t, j2.ID).State == store.JobRunning })

	a.stream.CloseSend() // the agent goes away
	if err := a.ended(t); err != io.EOF {
		t.Fatalf("stream ended with %v, want a clean end (EOF)", err)
	}
	eventually(t, "the agent to be offline", func() bool { return b.agentStatus(t, id.id) == store.AgentOffline })
	if got := b.job(t, j1.ID); got.State != store.JobRunning || got.WorkerID != id.id {
		t.Fatalf("job of the offline agent %+v, want it kept", got)
	}
	if evs := b.events(t, "agent.disconnected", id.id); len(evs) != 1 || payload(t, evs[0])["reason"] != "graceful" {
		t.Errorf("agent.disconnected events %v", evs)
	}

	// Meanwhile job 1 goes to another attempt (its lease was failed).
	if err := b.svc.FailLease(ctx, store.Lease{JobID: j1.ID, WorkerID: id.id, Attempt: 1}, "test"); err != nil {
		t.Fatal(err)
	}
	a2 := b.connect(t, id, hello(2, r1.Lease, r2.Lease))
	c := a2.expectCancel(t, j1.ID)
	if !strings.Contains(c.Reason, "stale") {
		t.Errorf("reason %q", c.Reason)
	}
	if st := b.agentStatus(t, id.id); st != store.AgentOnline {
		t.Errorf("status %s after reconnecting", st)
	}
	// Job 2's lease is current: its result counts.
	seq := a2.next()
	a2.send(t, result(seq, r2.Lease, "success"))
	a2.expectAck(t, seq)
	if got := b.job(t, j2.ID); got.State != store.JobSucceeded {
		t.Errorf("job 2 %s", got.State)
	}
	a2.none(t, "a CancelJob of the current lease", func(m *agentrpc.ServerMessage) bool {
		return m.GetCancel().GetJobId() == j2.ID
	})
	// Job 1 is queued again: with a free slot, the agent gets attempt 2.
	run := a2.expectRun(t)
	if run.Lease.JobId != j1.ID || run.Lease.Attempt != 2 {
		t.Errorf("lease %v, want attempt 2 of job 1", run.Lease)
	}

	// Connecting again ends the older stream, without marking the agent
	// offline.
	a3 := b.connect(t, id, hello(2, run.Lease))
	if err := a2.ended(t); status.Code(err) != codes.Unavailable {
		t.Errorf("older stream ended with %v, want Unavailable", err)
	}
	a3.none(t, "a CancelJob of a current lease", func(m *agentrpc.ServerMessage) bool { return m.GetCancel() != nil })
	if st := b.agentStatus(t, id.id); st != store.AgentOnline {
		t.Errorf("status %s, want online", st)
	}
}

// TestOrphans: a lease the agent neither reports nor finishes is handed
// back after the grace, not before; a job it runs without holding it is
// cancelled.
func TestOrphans(t *testing.T) {
	t.Parallel()
	clk := testkit.NewClock()
	b := setupWith(t, options{now: clk.Now})
	id := b.register(t, &agentrpc.RegisterRequest{Name: "forgetful"})
	a := b.connect(t, id, hello(1))
	j := b.submit(t, "lost on the way")
	run := a.expectRun(t)
	a.stream.CloseSend()
	a.ended(t)

	// It comes back without the job.
	a2 := b.connect(t, id, hello(1))
	a2.send(t, heartbeat())
	a2.sync(t) // the heartbeat was handled: the lease is unreported since now
	clk.Advance(agentsvc.DefaultOrphanGrace)
	a2.send(t, heartbeat())
	a2.sync(t)
	if got := b.job(t, j.ID); got.Attempt != 1 || got.WorkerID != id.id {
		t.Fatalf("job within the grace: attempt %d on %q, want attempt 1 kept", got.Attempt, got.WorkerID)
	}
	clk.Advance(time.Second)
	a2.send(t, heartbeat())
	next := a2.expectRun(t)
	if next.Lease.JobId != j.ID || next.Lease.Attempt != 2 {
		t.Fatalf("lease %v, want attempt 2 of the orphan", next.Lease)
	}
	// The old attempt, if it ran after all, is cancelled.
	a2.send(t, heartbeat(j.ID, "no-such-job"))
	a2.expectCancel(t, "no-such-job")
	_ = run
}

// TestDrain: a drained agent is told so and gets no more jobs.
func TestDrain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.register(t, &agentrpc.RegisterRequest{Name: "retiring"})
	a := b.connect(t, id, hello(2))
	j := b.submit(t, "before")
	a.expectRun(t)
	if _, err := b.svc.DrainAgent(context.Background(), id.id, "alice"); err != nil {
		t.Fatal(err)
	}
	b.srv.Drain(id.id)
	a.expect(t, "Drain", func(m *agentrpc.ServerMessage) bool { return m.GetDrain() != nil })
	j2 := b.submit(t, "after")
	b.dispatched(t)
	a.none(t, "a RunJob after the drain", isRun)
	if got := b.job(t, j2.ID); got.State != store.JobQueued {
		t.Errorf("job submitted after the drain: %s", got.State)
	}
	// The agent still finishes what it has.
	seq := a.next()
	a.send(t, result(seq, &agentrpc.Lease{JobId: j.ID, WorkerId: id.id, Attempt: 1}, "success"))
	a.expectAck(t, seq)
	if got := b.job(t, j.ID); got.State != store.JobSucceeded {
		t.Errorf("job %s", got.State)
	}
	b.dispatched(t) // the slot it freed
	a.none(t, "a RunJob after the drain", isRun)
	a.stream.CloseSend() // one agent connected at a time, for dispatched
	a.ended(t)

	// An agent that drains itself gets no jobs either.
	id2 := b.register(t, &agentrpc.RegisterRequest{Name: "leaving"})
	h := hello(1)
	h.Draining = true
	a2 := b.connect(t, id2, h)
	b.dispatched(t)
	a2.none(t, "a RunJob for a draining agent", isRun)
	if st := b.agentStatus(t, id2.id); st != store.AgentDraining {
		t.Errorf("status %s, want draining", st)
	}
}

// TestStop: stopping the server ends the streams; the agents are offline.
func TestStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.register(t, &agentrpc.RegisterRequest{Name: "a"})
	a := b.connect(t, id, hello(1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.srv.Stop(ctx)
	if err := a.ended(t); status.Code(err) != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", err)
	}
	if st := b.agentStatus(t, id.id); st != store.AgentOffline {
		t.Errorf("status %s, want offline", st)
	}
	if _, err := b.dial(t, nil).Register(ctx, &agentrpc.RegisterRequest{Token: "x"}); err == nil {
		t.Error("registered after Stop")
	}
}

// flaky fails AppendLogs once, as a database that is briefly unavailable.
type flaky struct {
	agentsvc.Control
	failed atomic.Bool
}

func (f *flaky) AppendLogs(ctx context.Context, jobID, runID string, lines []store.LogLine) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("disk I/O error")
	}
	return f.Control.AppendLogs(ctx, jobID, runID, lines)
}

// TestUnstoredNotAcknowledged: a report that could not be stored is not
// acknowledged: the stream ends, and the agent sends it again.
func TestUnstoredNotAcknowledged(t *testing.T) {
	t.Parallel()
	b := setupWith(t, options{control: func(c agentsvc.Control) agentsvc.Control { return &flaky{Control: c} }})
	id := b.register(t, &agentrpc.RegisterRequest{Name: "a"})
	a := b.connect(t, id, hello(1))
	j := b.submit(t, "job")
	run := a.expectRun(t)
	a.send(t, accepted(run.Lease))
	batch := &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Logs{Logs: &agentrpc.LogBatch{
		BatchSeq: a.next(), Lease: run.Lease, Lines: []*agentrpc.LogLine{{Seq: 1, Stream: "stdout", Text: "kept"}},
	}}}
	a.send(t, batch)
	if err := a.ended(t); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream ended with %v, want Unavailable", err)
	}
	if slices.ContainsFunc(a.held, func(m *agentrpc.ServerMessage) bool { return m.GetAck() != nil }) {
		t.Fatal("the unstored batch was acknowledged")
	}
	a2 := b.connect(t, id, hello(1, run.Lease))
	a2.send(t, batch)
	a2.expectAck(t, batch.GetLogs().BatchSeq)
	lines, err := b.store.Logs().Read(context.Background(), j.ID, 0, 0)
	if err != nil || len(lines) != 1 || lines[0].Text != "kept" {
		t.Errorf("lines %+v, %v", lines, err)
	}
}

// TestHelloMachine: the machine an agent says it has is stored on its row.
func TestHelloMachine(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.register(t, &agentrpc.RegisterRequest{Name: "big", Os: "linux", Arch: "amd64"})
	h := hello(2)
	h.CpuMillis, h.MemoryBytes, h.Gpus, h.Os, h.Arch = 16000, 64<<30, 2, "linux", "arm64"
	b.connect(t, id, h)
	var a store.Agent
	testkit.Until(t, 10*time.Second, func() (bool, string) { // the session stores the Hello after the stream opened
		a, _ = b.store.Agents().Get(context.Background(), id.id)
		return a.CPUMillis == 16000 && a.MemoryBytes == 64<<30 && a.GPUs == 2 && a.Arch == "arm64" && a.Capacity == 2, fmt.Sprintf("stored %+v", a)
	})
	bad := hello(1)
	bad.Gpus = -1
	a2 := b.open(t, &id.cert)
	a2.send(t, &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Hello{Hello: bad}})
	if err := a2.ended(t); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a Hello with -1 GPUs: %v", err)
	}
}

// TestPlacement: a job goes to the connected agent that has the resources
// it asks for free; one that fits none stays queued.
func TestPlacement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	sized := func(name string, cpus int64, gpus int32) *agent {
		id := b.register(t, &agentrpc.RegisterRequest{Name: name})
		h := hello(2)
		h.CpuMillis, h.MemoryBytes, h.Gpus, h.Os, h.Arch = cpus*1000, 8<<30, gpus, "linux", "amd64"
		return b.connect(t, id, h)
	}
	small, big := sized("small", 2, 0), sized("big", 8, 1)
	submit := func(name string, r *jobspec.Resources) store.Job {
		j, err := b.svc.SubmitJob(ctx, jobspec.Spec{Name: name, Command: "true", Resources: r}, "test")
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	gpu := submit("gpu", &jobspec.Resources{GPU: 1})
	if run := big.expectRun(t); run.Lease.JobId != gpu.ID {
		t.Fatalf("big got %s, want the GPU job", run.Lease.JobId)
	}
	// best-fit: the small agent, though the big one has a slot free.
	little := submit("little", &jobspec.Resources{CPU: "1"})
	if run := small.expectRun(t); run.Lease.JobId != little.ID {
		t.Fatalf("small got %s, want the little job", run.Lease.JobId)
	}
	// 4 CPUs fit only on big, whatever its GPU.
	wide := submit("wide", &jobspec.Resources{CPU: "4"})
	if run := big.expectRun(t); run.Lease.JobId != wide.ID {
		t.Fatalf("big got %s, want the wide job", run.Lease.JobId)
	}
	// No room left on big for 5 more CPUs; none could ever take 16.
	huge := submit("huge", &jobspec.Resources{CPU: "16"})
	later := submit("later", &jobspec.Resources{CPU: "5"})
	b.dispatched(t)
	small.none(t, "a RunJob on small", isRun)
	big.none(t, "a RunJob on big", isRun)
	for _, j := range []store.Job{huge, later} {
		if got := b.job(t, j.ID); got.State != store.JobQueued {
			t.Errorf("%s is %s, want queued", j.Name, got.State)
		}
	}
}

// TestPlacementLooksPast: jobs that fit no agent, more than a page of the
// queue, do not hold up one behind them that fits.
func TestPlacementLooksPast(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a := b.connect(t, b.register(t, &agentrpc.RegisterRequest{Name: "cpu-only"}), hello(1))
	for i := range 50 {
		if _, err := b.svc.SubmitJob(ctx, jobspec.Spec{Name: fmt.Sprint("gpu-", i), Command: "true", Priority: 5,
			Resources: &jobspec.Resources{GPU: 1}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	j := b.submit(t, "plain")
	if run := a.expectRun(t); run.Lease.JobId != j.ID {
		t.Fatalf("RunJob of %s, want the plain job", run.Lease.JobId)
	}
}
