package agentsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

type stream = grpc.BidiStreamingServer[agentrpc.AgentMessage, agentrpc.ServerMessage]

// Connect is an agent's session (see the package documentation). The
// agent is the one its client certificate names; it must still be
// registered, and must say Hello first.
func (s *Server) Connect(st stream) error {
	ctx := st.Context()
	id, err := peerAgent(ctx, s)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "Connect needs a client certificate of this server's CA (register first): %v", err)
	}
	a, err := s.store.Agents().Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.Unauthenticated, "agent %s is not registered (it was deregistered): register again with a bootstrap token", id)
	}
	if err != nil {
		return rpcError(err)
	}
	sess := newSession(s, a, st)
	defer sess.cancel(nil)
	go sess.receive()
	hello, err := sess.hello()
	if err != nil {
		return rpcError(err)
	}
	if err := s.attach(ctx, sess, hello); err != nil {
		s.detach(sess, err)
		return rpcError(err)
	}
	err = sess.run(hello)
	s.detach(sess, err)
	if err == nil {
		return nil
	}
	sess.log.Info("agent stream ended", "err", err)
	return rpcError(err)
}

// peerAgent returns the agent that the peer's verified client certificate
// names.
func peerAgent(ctx context.Context, s *Server) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", errors.New("not a TLS connection")
	}
	return s.cfg.CA.VerifyAgent(ti.State.PeerCertificates)
}

// session is one Connect stream. The handler's goroutine processes what
// the agent sends, in order; receive reads the stream, send writes it,
// and dispatch places and pushes jobs.
type session struct {
	srv    *Server
	id     string
	stream stream
	log    *slog.Logger
	ctx    context.Context // ends with the stream, or when the session is replaced or the server stops
	cancel context.CancelCauseFunc

	in   chan *agentrpc.AgentMessage // closed after a receive error, rerr
	rerr error

	outMu    sync.Mutex
	out      []*agentrpc.ServerMessage
	outSig   chan struct{} // something to send
	closing  chan struct{} // send what is queued, then stop
	sendDone chan struct{}

	check        chan struct{} // read the agent's status
	freed        chan struct{} // slots were freed
	dispatchDone chan struct{}

	// Of the handler's goroutine only.
	ackUpTo, acked uint64

	mu        sync.Mutex
	labels    []string
	capacity  int
	machine   scheduler.Resources // what the agent reported it has
	os, arch  string
	draining  bool // no more jobs
	drainSent bool
	jobs      map[string]*held  // the leases the agent holds, as this session knows
	known     map[string]string // job ID → run ID of the jobs whose reports are this agent's
	orphans   map[string]time.Time
	missing   map[string]time.Time
	cancelled map[string]bool // CancelJob sent by reconciliation
}

// held is a lease the agent holds.
type held struct {
	store.Lease
	runID string
	need  scheduler.Resources // what the job asked for
}

func newSession(s *Server, a store.Agent, st stream) *session {
	ctx, cancel := context.WithCancelCause(st.Context())
	return &session{
		srv: s, id: a.ID, stream: st, ctx: ctx, cancel: cancel,
		log:    s.log.With("agent_id", a.ID, "agent", a.Name),
		in:     make(chan *agentrpc.AgentMessage, 64),
		outSig: make(chan struct{}, 1), closing: make(chan struct{}), sendDone: make(chan struct{}),
		check: make(chan struct{}, 1), freed: make(chan struct{}, 1), dispatchDone: make(chan struct{}),
		labels: a.Labels, capacity: a.Capacity, machine: machine(a), os: a.OS, arch: a.Arch,
		jobs: map[string]*held{}, known: map[string]string{},
		orphans: map[string]time.Time{}, missing: map[string]time.Time{}, cancelled: map[string]bool{},
	}
}

// receive reads the stream into in.
func (sess *session) receive() {
	defer close(sess.in)
	for {
		m, err := sess.stream.Recv()
		if err != nil {
			sess.rerr = err
			return
		}
		select {
		case sess.in <- m:
		case <-sess.ctx.Done():
			sess.rerr = context.Cause(sess.ctx)
			return
		}
	}
}

// hello waits for the agent's first message, which must be a Hello.
func (sess *session) hello() (*agentrpc.Hello, error) {
	t := time.NewTimer(helloTimeout)
	defer t.Stop()
	select {
	case m, ok := <-sess.in:
		if !ok {
			return nil, sess.rerr
		}
		if h := m.GetHello(); h != nil {
			return h, nil
		}
		return nil, status.Error(codes.InvalidArgument, "the first message of a stream must be a Hello")
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no Hello within %s", helloTimeout)
	case <-sess.srv.stopping:
		return nil, errStopping
	}
}

// attach makes sess the agent's session, replacing an older one, and
// records what the Hello says: the agent is online (or draining), with its
// version, capacity and labels.
func (s *Server) attach(ctx context.Context, sess *session, h *agentrpc.Hello) error {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	s.mu.Lock()
	old := s.sessions[sess.id]
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	if old != nil {
		old.log.Info("agent connected again: ending its older stream")
		old.cancel(errReplaced)
	}
	// The Hello counts as a heartbeat: the agent may have been silent (and
	// offline) for long.
	if err := s.store.Agents().Heartbeat(ctx, sess.id); err != nil {
		return err
	}
	a, err := s.store.Agents().Get(ctx, sess.id)
	if err != nil {
		return err
	}
	want := a
	if h.GetVersion() != "" {
		want.Version = h.GetVersion()
	}
	if c := int(h.GetCapacity()); c > 0 && c <= maxAgentCapacity {
		want.Capacity = c
	}
	if err := pki.CheckLabels(h.GetLabels()); err != nil {
		return status.Errorf(codes.InvalidArgument, "hello: %v", err)
	}
	want.Labels = pki.MergeLabels(a.Labels, h.GetLabels())
	if h.GetCpuMillis() < 0 || h.GetMemoryBytes() < 0 || h.GetGpus() < 0 || len(h.GetOs()) > 64 || len(h.GetArch()) > 64 {
		return status.Error(codes.InvalidArgument, "hello: negative resources, or an os or arch longer than 64 bytes")
	}
	want.CPUMillis, want.MemoryBytes, want.GPUs = h.GetCpuMillis(), h.GetMemoryBytes(), int(h.GetGpus())
	if h.GetOs() != "" || h.GetArch() != "" {
		want.OS, want.Arch = h.GetOs(), h.GetArch()
	}
	if want.Version != a.Version || want.Capacity != a.Capacity || !slices.Equal(want.Labels, a.Labels) ||
		want.CPUMillis != a.CPUMillis || want.MemoryBytes != a.MemoryBytes || want.GPUs != a.GPUs || want.OS != a.OS || want.Arch != a.Arch {
		if a, err = s.store.Agents().Register(ctx, want); err != nil { // online again
			return err
		}
	}
	drainedHere := a.Status == store.AgentDraining
	next := store.AgentOnline
	if h.GetDraining() || drainedHere {
		next = store.AgentDraining
	}
	if a.Status != next {
		if a, err = s.store.Agents().SetStatus(ctx, sess.id, next); err != nil {
			return err
		}
	}
	sess.mu.Lock()
	sess.labels, sess.capacity = a.Labels, a.Capacity
	sess.machine, sess.os, sess.arch = machine(a), a.OS, a.Arch
	sess.draining = next == store.AgentDraining
	sess.drainSent = h.GetDraining() // an agent drained by the server is told so (run)
	sess.mu.Unlock()
	sess.log.Info("agent connected", "capacity", a.Capacity, "labels", a.Labels, "running", len(h.GetRunning()), "draining", sess.draining)
	return nil
}

// detach ends sess: unless the agent has connected again meanwhile, it is
// offline, keeping its leases for it to reconnect, until the scheduler's
// sweep finds it silent and lost.
func (s *Server) detach(sess *session, cause error) {
	sess.cancel(cause)
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	s.mu.Lock()
	current := s.sessions[sess.id] == sess
	if current {
		delete(s.sessions, sess.id)
	}
	s.mu.Unlock()
	if !current {
		return
	}
	reason := "error"
	if cause == nil || errors.Is(cause, errStopping) {
		reason = "graceful"
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sess.ctx), sendTimeout)
	defer cancel()
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		a, err := tx.Agents().Get(ctx, sess.id)
		if errors.Is(err, store.ErrNotFound) {
			return nil // deregistered
		}
		if err != nil {
			return err
		}
		if a.Status != store.AgentOffline && a.Status != store.AgentLost {
			if _, err := tx.Agents().SetStatus(ctx, sess.id, store.AgentOffline); err != nil {
				return err
			}
		}
		return appendEvent(ctx, tx, "agent", sess.id, "agent.disconnected", scheduler.AgentDisconnected{
			AgentID: sess.id, Reason: reason, LastHeartbeatAt: a.LastHeartbeatAt, DisconnectedAt: time.Now().UTC(),
		})
	})
	if err != nil {
		sess.log.Error("mark the agent offline", "err", err)
	}
	sess.log.Info("agent disconnected", "reason", reason)
}

// run serves the session once attached: it reconciles the leases the
// agent reports, starts sending and dispatching, and processes what the
// agent sends until the stream ends (nil when the agent closed it).
func (sess *session) run(h *agentrpc.Hello) error {
	go sess.send()
	dctx, stopDispatch := context.WithCancel(sess.ctx)
	dispatching := false
	defer func() {
		// No more jobs; then the last acknowledgements, if the agent
		// still reads.
		stopDispatch()
		if dispatching {
			<-sess.dispatchDone
		}
		sess.flushAck()
		close(sess.closing)
		select {
		case <-sess.sendDone:
		case <-time.After(sendTimeout):
		}
		sess.cancel(nil)
		// Cancellations now wait for the agent's next session (its Hello).
		sess.mu.Lock()
		ids := make([]string, 0, len(sess.jobs))
		for id := range sess.jobs {
			ids = append(ids, id)
		}
		sess.mu.Unlock()
		for _, id := range ids {
			sess.srv.unwatch(id, sess)
		}
	}()
	if err := sess.reconcile(h); err != nil {
		return err
	}
	sess.mu.Lock()
	if sess.draining && !sess.drainSent {
		sess.drainSent = true
		sess.send1(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Drain{Drain: &agentrpc.Drain{}}})
	}
	sess.mu.Unlock()
	dispatching = true
	go sess.dispatch(dctx)
	for {
		var m *agentrpc.AgentMessage
		var ok bool
		select {
		case m, ok = <-sess.in:
		default:
			sess.flushAck()
			select {
			case m, ok = <-sess.in:
			case <-sess.ctx.Done():
				return context.Cause(sess.ctx)
			case <-sess.srv.stopping:
				return errStopping
			}
		}
		if !ok {
			if errors.Is(sess.rerr, io.EOF) {
				return nil
			}
			if err := context.Cause(sess.ctx); err != nil && !errors.Is(err, context.Canceled) {
				return err // replaced, deregistered
			}
			return sess.rerr
		}
		if err := sess.handle(m); err != nil {
			return err
		}
		if sess.ackUpTo-sess.acked >= ackEvery {
			sess.flushAck() // a steady stream is acknowledged as it goes
		}
	}
}

// ackEvery bounds the reports processed before an Ack when the agent sends
// without a pause; otherwise the Ack goes when the stream pauses.
const ackEvery = 32

// reconcile keeps the leases of the Hello that are still current and
// cancels, on the agent, those that are not: only the current attempt of
// a job may report.
func (sess *session) reconcile(h *agentrpc.Hello) error {
	for _, pl := range h.GetRunning() {
		l := lease(pl)
		if l.WorkerID != sess.id {
			sess.cancelJob(l.JobID, "the lease is another agent's")
			continue
		}
		j, err := sess.srv.store.Jobs().Get(sess.ctx, l.JobID)
		switch {
		case err == nil && active(j) && j.Lease() == l:
			sess.hold(l, j.RunID, sess.srv.ctl.Need(sess.ctx, j).Resources)
		case err == nil:
			sess.cancelJob(l.JobID, fmt.Sprintf("stale lease (attempt %d): the job is %s, attempt %d", l.Attempt, j.State, j.Attempt))
		case errors.Is(err, store.ErrNotFound):
			sess.cancelJob(l.JobID, "the job does not exist")
		default:
			return err
		}
	}
	return nil
}

func active(j store.Job) bool { return j.State == store.JobAssigned || j.State == store.JobRunning }

// handle processes one message of the agent. An error ends the stream.
func (sess *session) handle(m *agentrpc.AgentMessage) error {
	switch x := m.GetMsg().(type) {
	case *agentrpc.AgentMessage_Hello:
		sess.log.Warn("a second Hello on one stream: ignored")
	case *agentrpc.AgentMessage_Heartbeat:
		sess.heartbeat(x.Heartbeat)
	case *agentrpc.AgentMessage_Logs:
		return sess.reliable("log batch", x.Logs.GetBatchSeq(), sess.logs(x.Logs))
	case *agentrpc.AgentMessage_Step:
		return sess.reliable("step update", x.Step.GetBatchSeq(), sess.step(x.Step))
	case *agentrpc.AgentMessage_Result:
		return sess.reliable("job result", x.Result.GetBatchSeq(), sess.result(x.Result))
	case *agentrpc.AgentMessage_Accepted:
		sess.accepted(x.Accepted)
	case *agentrpc.AgentMessage_Rejected:
		sess.rejected(x.Rejected)
	default:
		sess.log.Warn("unknown message from the agent", "type", fmt.Sprintf("%T", x))
	}
	return nil
}

// reliable counts a report as processed, to be acknowledged, unless err
// says it could not be stored now: then the stream ends without it, and
// the agent sends it again.
func (sess *session) reliable(what string, seq uint64, err error) error {
	if transient(err) {
		return fmt.Errorf("store a %s (batch %d): %w", what, seq, err)
	}
	if err != nil {
		// Steps of a job submitted directly are not stored: their updates
		// are dropped routinely.
		level := slog.LevelWarn
		if what == "step update" {
			level = slog.LevelDebug
		}
		sess.log.Log(sess.ctx, level, "dropped a "+what+" that cannot be stored", "batch_seq", seq, "err", err)
	}
	sess.ackUpTo = max(sess.ackUpTo, seq)
	return nil
}

func (sess *session) flushAck() {
	if sess.ackUpTo > sess.acked {
		sess.acked = sess.ackUpTo
		sess.send1(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Ack{Ack: &agentrpc.Ack{UpTo: sess.acked}}})
	}
}

// owns checks that a report is about a job of this agent and returns its
// run.
func (sess *session) owns(l store.Lease) (string, error) {
	if l.WorkerID != sess.id || l.JobID == "" {
		return "", errNotYours
	}
	sess.mu.Lock()
	runID, ok := sess.known[l.JobID]
	sess.mu.Unlock()
	if ok {
		return runID, nil
	}
	j, err := sess.srv.store.Jobs().Get(sess.ctx, l.JobID)
	if err != nil {
		return "", err
	}
	if j.WorkerID != sess.id {
		return "", errNotYours
	}
	sess.mu.Lock()
	sess.known[j.ID] = j.RunID
	sess.mu.Unlock()
	return j.RunID, nil
}

func (sess *session) logs(b *agentrpc.LogBatch) error {
	l := lease(b.GetLease())
	runID, err := sess.owns(l)
	if err != nil {
		return err
	}
	lines := make([]store.LogLine, len(b.GetLines()))
	for i, x := range b.GetLines() {
		lines[i] = store.LogLine{Seq: x.GetSeq(), Attempt: int(x.GetAttempt()), StepID: x.GetStepId(), Stream: x.GetStream(), Text: x.GetText()}
		if lines[i].Attempt == 0 {
			lines[i].Attempt = l.Attempt // an agent older than attempts in lines
		}
		if x.GetTime().IsValid() {
			lines[i].Time = x.GetTime().AsTime()
		}
	}
	return sess.srv.ctl.AppendLogs(sess.ctx, l.JobID, runID, lines)
}

func (sess *session) step(u *agentrpc.StepUpdate) error {
	l := lease(u.GetLease())
	if _, err := sess.owns(l); err != nil {
		return err
	}
	return sess.srv.ctl.StepUpdate(sess.ctx, l, int(u.GetIndex()), runner.StepResult{Status: runner.Status(u.GetStatus())})
}

func (sess *session) result(r *agentrpc.JobResult) error {
	l := lease(r.GetLease())
	if l.WorkerID != sess.id {
		return errNotYours
	}
	res := runner.JobResult{Status: runner.Status(r.GetStatus()), Reason: r.GetReason(), Steps: make([]runner.StepResult, len(r.GetSteps()))}
	if r.GetError() != "" {
		res.Err = errors.New(r.GetError())
	}
	for i, x := range r.GetSteps() {
		res.Steps[i] = runner.StepResult{
			Status: runner.Status(x.GetStatus()), ExitCode: int(x.GetExitCode()), Outputs: x.GetOutputs(),
			Duration: time.Duration(x.GetDurationMs()) * time.Millisecond, Attempts: int(x.GetAttempts()),
		}
		if x.GetError() != "" {
			res.Steps[i].Err = errors.New(x.GetError())
		}
	}
	err := sess.srv.ctl.Finish(sess.ctx, l, res) // a stale lease changes nothing
	if !transient(err) {
		sess.release(l)
	}
	return err
}

// accepted starts the job, or cancels it on the agent if its lease is no
// longer current.
func (sess *session) accepted(a *agentrpc.JobAccepted) {
	l := lease(a.GetLease())
	if _, err := sess.owns(l); err != nil {
		sess.log.Warn("job accepted: not this agent's", "job_id", l.JobID, "err", err)
		return
	}
	err := sess.srv.ctl.Start(sess.ctx, l)
	switch {
	case err == nil:
		sess.srv.events(sess.ctx, event("job", l.JobID, "job.accepted", jobDispatch{JobID: l.JobID, AgentID: sess.id, Attempt: l.Attempt}))
	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
		j, gerr := sess.srv.store.Jobs().Get(sess.ctx, l.JobID)
		if gerr == nil && j.State == store.JobRunning && j.Lease() == l {
			return // accepted twice (sent again after a reconnect)
		}
		sess.cancelJob(l.JobID, "the lease is no longer current")
	default:
		sess.log.Warn("start a job", "job_id", l.JobID, "err", err) // it stays assigned; its result still counts
	}
}

// rejected hands a job the agent does not run back to the queue.
func (sess *session) rejected(r *agentrpc.JobRejected) {
	l := lease(r.GetLease())
	if l.WorkerID != sess.id {
		return
	}
	sess.log.Info("job rejected by the agent", "job_id", l.JobID, "reason", r.GetReason())
	if err := sess.srv.ctl.FailLease(sess.ctx, l, "rejected by the agent: "+r.GetReason()); err != nil {
		sess.log.Warn("hand a rejected job back", "job_id", l.JobID, "err", err) // its lease expires
	}
	sess.release(l)
	sess.srv.events(sess.ctx, event("job", l.JobID, "job.rejected", jobDispatch{JobID: l.JobID, AgentID: sess.id, Attempt: l.Attempt, Reason: r.GetReason()}))
}

// heartbeat renews the agent's leases, records and publishes it, and
// reconciles what the agent runs with what the store gives it.
func (sess *session) heartbeat(h *agentrpc.Heartbeat) {
	s := sess.srv
	heldIDs, err := s.ctl.Heartbeat(sess.ctx, sess.id)
	if err != nil {
		sess.log.Warn("heartbeat", "err", err)
		return
	}
	a, err := s.store.Agents().Get(sess.ctx, sess.id)
	if errors.Is(err, store.ErrNotFound) {
		sess.cancel(errDeregistered)
		return
	}
	if err != nil {
		sess.log.Warn("heartbeat", "err", err)
		return
	}
	switch {
	case h.GetDraining() && a.Status != store.AgentDraining:
		sess.setStatus(store.AgentDraining)
		sess.setDraining(false)
	case a.Status == store.AgentDraining:
		sess.setDraining(true)
	case a.Status == store.AgentLost || a.Status == store.AgentOffline:
		sess.log.Info("agent heard from again", "was", a.Status)
		sess.setStatus(store.AgentOnline)
	}
	sess.reconcileRunning(heldIDs, h.GetRunningJobs())
	sess.publishHeartbeat(h)
}

// reconcileRunning compares the jobs the store gives the agent (held) with
// those the agent says it runs:
//   - a job it runs that it does not hold was taken from it: cancel it;
//   - a job it holds that it runs, unknown to the session, is adopted;
//   - a job it holds that it neither runs nor reported for OrphanGrace is
//     failed (it was lost on the way), so that it runs again;
//   - a job the session counts that neither the store nor the agent has
//     any more is forgotten after OrphanGrace, freeing its slot.
func (sess *session) reconcileRunning(heldIDs, running []string) {
	s := sess.srv
	now := s.cfg.Now()
	for _, id := range running {
		if !slices.Contains(heldIDs, id) {
			sess.mu.Lock()
			first := !sess.cancelled[id]
			sess.cancelled[id] = true
			sess.mu.Unlock()
			if first {
				sess.cancelJob(id, "the job was taken from the agent")
			}
		}
	}
	sess.mu.Lock()
	for id := range sess.cancelled {
		if !slices.Contains(running, id) {
			delete(sess.cancelled, id) // the agent stopped it
		}
	}
	sess.mu.Unlock()
	var orphans []string
	sess.mu.Lock()
	for _, id := range heldIDs {
		if sess.jobs[id] != nil {
			delete(sess.orphans, id)
			continue
		}
		if slices.Contains(running, id) {
			orphans = append(orphans, id) // adopted below
			continue
		}
		if t, ok := sess.orphans[id]; !ok {
			sess.orphans[id] = now
		} else if now.Sub(t) > s.cfg.OrphanGrace {
			orphans = append(orphans, id)
		}
	}
	for id := range sess.orphans {
		if !slices.Contains(heldIDs, id) {
			delete(sess.orphans, id)
		}
	}
	var gone []store.Lease
	for id, l := range sess.jobs {
		if slices.Contains(heldIDs, id) || slices.Contains(running, id) {
			delete(sess.missing, id)
			continue
		}
		if t, ok := sess.missing[id]; !ok {
			sess.missing[id] = now
		} else if now.Sub(t) > s.cfg.OrphanGrace {
			gone = append(gone, l.Lease)
		}
	}
	sess.mu.Unlock()
	for _, l := range gone {
		sess.log.Warn("forgetting a job the agent no longer reports", "job_id", l.JobID)
		sess.release(l)
	}
	for _, id := range orphans {
		j, err := s.store.Jobs().Get(sess.ctx, id)
		if err != nil || !active(j) || j.WorkerID != sess.id {
			continue
		}
		if slices.Contains(running, id) {
			sess.hold(j.Lease(), j.RunID, s.ctl.Need(sess.ctx, j).Resources)
			continue
		}
		sess.log.Warn("the agent does not run a job it holds: handing it back", "job_id", id, "attempt", j.Attempt)
		if err := s.ctl.FailLease(sess.ctx, j.Lease(), scheduler.ReasonAgentLost+": the agent does not run it"); err != nil {
			sess.log.Warn("hand a job back", "job_id", id, "err", err)
		}
		sess.mu.Lock()
		delete(sess.orphans, id)
		sess.mu.Unlock()
	}
}

func (sess *session) setStatus(st store.AgentStatus) {
	if _, err := sess.srv.store.Agents().SetStatus(sess.ctx, sess.id, st); err != nil {
		sess.log.Warn("set the agent's status", "status", st, "err", err)
	}
}

// setDraining stops dispatching; tell sends the agent a Drain (once).
func (sess *session) setDraining(tell bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.draining = true
	if tell && !sess.drainSent {
		sess.drainSent = true
		sess.log.Info("agent drained: telling it")
		sess.send1(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Drain{Drain: &agentrpc.Drain{}}})
	}
}

// checkStatus asks the dispatcher to read the agent's status now.
func (sess *session) checkStatus() { sess.wake(sess.check) }

// refreshStatus reads the agent's status: drained (by this server's API or
// another's), or deregistered.
func (sess *session) refreshStatus() {
	a, err := sess.srv.store.Agents().Get(sess.ctx, sess.id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		sess.log.Info("agent deregistered: ending its stream")
		sess.cancel(errDeregistered)
	case err != nil:
		if sess.ctx.Err() == nil {
			sess.log.Warn("read the agent's status", "err", err)
		}
	case a.Status == store.AgentDraining:
		sess.setDraining(true)
	}
}

// dispatch places queued jobs on the agents connected to this server
// (Server.place) whenever jobs are queued or the agent's slots are freed
// (and every Poll, for jobs queued by other servers).
func (sess *session) dispatch(ctx context.Context) {
	defer close(sess.dispatchDone)
	s := sess.srv
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	for {
		queued := s.ctl.Queued()
		s.place(ctx)
		select {
		case <-ctx.Done():
			return
		case <-queued:
		case <-sess.freed:
		case <-sess.check:
			sess.refreshStatus()
		case <-poll.C:
			sess.refreshStatus()
		}
	}
}

// push sends the agent a job placed on it.
func (sess *session) push(ctx context.Context, a spec.Assignment, need scheduler.Resources) {
	l := a.Lease
	m, err := runJob(a)
	if err != nil {
		sess.log.Error("job cannot be sent", "job_id", l.JobID, "err", err)
		if err := sess.srv.ctl.Finish(ctx, l, runner.JobResult{Status: runner.StatusFailure, Err: err}); err != nil {
			sess.log.Error("finish", "job_id", l.JobID, "err", err)
		}
		return
	}
	sess.hold(l, a.RunID, need)
	sess.send1(m)
	sess.log.Debug("job dispatched", "job_id", l.JobID, "run_id", a.RunID, "attempt", l.Attempt)
	sess.srv.events(ctx, event("job", l.JobID, "job.dispatched", jobDispatch{JobID: l.JobID, RunID: a.RunID, AgentID: sess.id, Attempt: l.Attempt}))
}

// giveBack hands back a job placed on the agent as its session ended.
func (sess *session) giveBack(a spec.Assignment) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sess.ctx), sendTimeout)
	defer cancel()
	if err := sess.srv.ctl.FailLease(ctx, a.Lease, "not delivered: the agent disconnected"); err != nil {
		sess.log.Warn("hand a job back", "job_id", a.Lease.JobID, "err", err) // its lease expires
	}
}

// runJob is the message that pushes an assignment.
func runJob(a spec.Assignment) (*agentrpc.ServerMessage, error) {
	l := a.Lease
	m := &agentrpc.RunJob{Lease: protoLease(l), RunId: a.RunID, RegistryPassword: a.RegistryPassword}
	var err error
	if m.Job, err = json.Marshal(a.Job); err != nil {
		return nil, fmt.Errorf("encode the job: %w", err)
	}
	if len(a.LocalSecrets) > 0 {
		if m.LocalSecrets, err = json.Marshal(a.LocalSecrets); err != nil {
			return nil, fmt.Errorf("encode the local secrets: %w", err)
		}
	}
	return &agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Run{Run: m}}, nil
}

// hold counts a lease as the agent's and forwards the job's cancellation
// to it.
func (sess *session) hold(l store.Lease, runID string, need scheduler.Resources) {
	sess.mu.Lock()
	sess.jobs[l.JobID] = &held{Lease: l, runID: runID, need: need}
	sess.known[l.JobID] = runID
	delete(sess.orphans, l.JobID)
	sess.mu.Unlock()
	sess.srv.watch(l.JobID, sess)
}

// release forgets a lease that ended, freeing its slot.
func (sess *session) release(l store.Lease) {
	sess.mu.Lock()
	h := sess.jobs[l.JobID]
	if h == nil || h.Lease != l {
		sess.mu.Unlock()
		return
	}
	delete(sess.jobs, l.JobID)
	delete(sess.missing, l.JobID)
	delete(sess.known, l.JobID) // a late report finds the job in the store
	sess.mu.Unlock()
	sess.srv.unwatch(l.JobID, sess)
	sess.wake(sess.freed)
}

// cancelJob tells the agent to stop a job.
func (sess *session) cancelJob(jobID, reason string) {
	sess.log.Info("cancelling a job on the agent", "job_id", jobID, "reason", reason)
	sess.send1(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_Cancel{Cancel: &agentrpc.CancelJob{JobId: jobID, Reason: reason}}})
}

func (sess *session) wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// send1 queues a message for the agent; it never blocks, and takes only
// outMu (callers may hold sess.mu).
func (sess *session) send1(m *agentrpc.ServerMessage) {
	sess.outMu.Lock()
	sess.out = append(sess.out, m)
	sess.outMu.Unlock()
	sess.wake(sess.outSig)
}

// send writes queued messages, and a KeepAlive every Config.KeepAlive,
// until the session closes (after writing what is queued) or ends.
func (sess *session) send() {
	defer close(sess.sendDone)
	ka := time.NewTicker(sess.srv.cfg.KeepAlive)
	defer ka.Stop()
	flush := func() bool {
		sess.outMu.Lock()
		msgs := sess.out
		sess.out = nil
		sess.outMu.Unlock()
		for _, m := range msgs {
			if err := sess.stream.Send(m); err != nil {
				sess.cancel(err)
				return false
			}
		}
		return true
	}
	for {
		select {
		case <-sess.outSig:
			if !flush() {
				return
			}
		case <-ka.C:
			if err := sess.stream.Send(&agentrpc.ServerMessage{Msg: &agentrpc.ServerMessage_KeepAlive{KeepAlive: &agentrpc.KeepAlive{}}}); err != nil {
				sess.cancel(err)
				return
			}
		case <-sess.closing:
			flush()
			return
		case <-sess.ctx.Done():
			return
		}
	}
}

// watch forwards the cancellation of a job to the session of its agent
// that is current when it happens.
func (s *Server) watch(jobID string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.watched[jobID]; w != nil {
		if w.sess.id == sess.id {
			w.sess = sess
			return
		}
		w.unregister()
	}
	agentID := sess.id
	w := &watcher{sess: sess}
	w.unregister = s.ctl.OnCancel(jobID, func(reason string) {
		s.mu.Lock()
		cur := s.sessions[agentID]
		s.mu.Unlock()
		if cur != nil {
			cur.cancelJob(jobID, reason)
		}
	})
	s.watched[jobID] = w
}

// unwatch stops forwarding a job's cancellation, unless another session
// took it over.
func (s *Server) unwatch(jobID string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.watched[jobID]; w != nil && w.sess == sess {
		w.unregister()
		delete(s.watched, jobID)
	}
}

type watcher struct {
	sess       *session
	unregister func()
}

// publishHeartbeat publishes the heartbeat live on agent.<id>.heartbeat.
func (sess *session) publishHeartbeat(h *agentrpc.Heartbeat) {
	if sess.srv.cfg.Live == nil {
		return
	}
	sess.mu.Lock()
	st := "idle"
	switch {
	case sess.draining:
		st = "draining"
	case len(sess.jobs) > 0:
		st = "busy"
	}
	var runID string
	for _, j := range sess.jobs {
		if j.runID != "" {
			runID = j.runID
			break
		}
	}
	sess.mu.Unlock()
	b, err := json.Marshal(heartbeatEvent{
		AgentID: sess.id, Status: st, CurrentRunID: runID, RunningJobs: h.GetRunningJobs(), Timestamp: time.Now().UTC(),
		SystemMetrics: systemMetrics{CPUPercent: h.GetCpuPercent(), MemoryUsedBytes: h.GetMemoryUsedBytes(),
			MemoryTotalBytes: h.GetMemoryTotalBytes(), DiskFreeBytes: h.GetDiskFreeBytes()},
	})
	if err == nil {
		sess.srv.cfg.Live.Publish(events.AgentHeartbeatSubject(sess.id), b)
	}
}

func lease(l *agentrpc.Lease) store.Lease {
	return store.Lease{JobID: l.GetJobId(), WorkerID: l.GetWorkerId(), Attempt: int(l.GetAttempt())}
}

func protoLease(l store.Lease) *agentrpc.Lease {
	return &agentrpc.Lease{JobId: l.JobID, WorkerId: l.WorkerID, Attempt: int32(l.Attempt)}
}
