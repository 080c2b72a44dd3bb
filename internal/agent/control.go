package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/worker"
)

// Reasons given to the server when the agent hands a job back.
const (
	reasonShutdown = "agent shutting down"
	reasonDraining = "agent is draining"
	reasonHeld     = "agent already runs this job"
	reasonFull     = "agent has no free slot"
)

// errNotHeld is returned by Start for a lease the agent no longer holds.
var errNotHeld = errors.New("the agent does not hold this lease")

// errShutdown is the cause of the jobs that the agent stops because it
// shuts down.
var errShutdown = errors.New("agent shutting down")

// Log batches: the worker batches at most 100 lines; a batch is split
// further so that no message comes near gRPC's default 4 MiB limit (a line
// may be 64 KiB long).
const maxBatchBytes = 1 << 20

// control is worker.Control over the agent's connection: a job the server
// pushes starts at once (execute), and every report becomes a message in
// the outbox. Nothing here waits for the network.
//
// Every lease the server pushes ends in exactly one JobRejected (handed
// back: draining, shutting down, already held) or one JobResult (including
// a job cancelled before it started, and a job whose payload cannot be
// decoded).
type control struct {
	out *outbox
	log *slog.Logger
	// beat asks the connection to send a heartbeat now (draining changed).
	beat func()

	// execute runs a pushed job on its own goroutine.
	execute  func(spec.Assignment)
	capacity int // jobs at once: a push beyond it is handed back

	mu       sync.Mutex
	jobs     map[string]*heldJob // pushed and not yet finished or handed back
	done     []string            // recently finished leases, to ignore a second push
	draining bool
	stopping bool
}

var _ worker.Control = (*control)(nil)

type heldJob struct {
	lease     *agentrpc.Lease
	cancelled bool   // by the server, before the worker registered onCancel
	reason    string // why
	onCancel  func(reason string)
}

// doneMemory is how many finished leases the agent remembers.
const doneMemory = 256

func newControl(out *outbox, log *slog.Logger, beat func(), capacity int, execute func(spec.Assignment)) *control {
	return &control{out: out, log: log, beat: beat, capacity: capacity, execute: execute, jobs: map[string]*heldJob{}}
}

// run takes a job the server pushed.
func (c *control) run(m *agentrpc.RunJob) {
	l := m.GetLease()
	if l.GetJobId() == "" {
		c.log.Warn("run job without a lease")
		return
	}
	log := c.log.With("job_id", l.JobId, "attempt", l.Attempt)
	c.mu.Lock()
	defer c.mu.Unlock()
	key := leaseKey(l)
	if slices.Contains(c.done, key) {
		log.Info("ignoring a job already run")
		return
	}
	if j := c.jobs[l.JobId]; j != nil {
		if leaseKey(j.lease) == key {
			return // pushed again after a reconnect
		}
		log.Warn("rejecting a job", "reason", reasonHeld)
		c.reject(l, reasonHeld)
		return
	}
	if c.stopping || c.draining || len(c.jobs) >= c.capacity {
		reason := reasonFull
		switch {
		case c.stopping:
			reason = reasonShutdown
		case c.draining:
			reason = reasonDraining
		}
		log.Info("rejecting a job", "reason", reason)
		c.reject(l, reason)
		return
	}
	a, err := assignment(m)
	if err != nil {
		log.Error("job cannot run", "err", err)
		c.result(l, &agentrpc.JobResult{Status: string(runner.StatusFailure), Error: err.Error()})
		return
	}
	log.Info("job received", "run_id", m.RunId)
	c.jobs[l.JobId] = &heldJob{lease: l}
	c.execute(a)
}

// assignment decodes a pushed job.
func assignment(m *agentrpc.RunJob) (spec.Assignment, error) {
	l := m.GetLease()
	a := spec.Assignment{
		Lease: spec.Lease{JobID: l.JobId, WorkerID: l.WorkerId, Attempt: int(l.Attempt)},
		RunID: m.RunId, RegistryPassword: m.RegistryPassword,
	}
	if err := json.Unmarshal(m.Job, &a.Job); err != nil {
		return a, fmt.Errorf("job %s: decode job: %w", l.JobId, err)
	}
	if a.Job.Version != spec.Version {
		return a, fmt.Errorf("job %s: job schema version %d, this agent reads %d: upgrade the agent", l.JobId, a.Job.Version, spec.Version)
	}
	if len(m.LocalSecrets) > 0 {
		if err := json.Unmarshal(m.LocalSecrets, &a.LocalSecrets); err != nil {
			return a, fmt.Errorf("job %s: decode local secrets: %w", l.JobId, err)
		}
	}
	return a, nil
}

// cancel stops a job the server cancelled.
func (c *control) cancel(m *agentrpc.CancelJob) {
	c.mu.Lock()
	j := c.jobs[m.JobId]
	if j == nil {
		c.mu.Unlock()
		return
	}
	c.log.Info("job cancelled by the server", "job_id", m.JobId, "reason", m.Reason)
	j.cancelled, j.reason = true, m.Reason
	fn := j.onCancel
	c.mu.Unlock()
	if fn != nil {
		fn(m.Reason)
	}
}

// drain takes no new job for good: the server's pushes are handed back;
// stopping also hands back the jobs pushed that have not started.
func (c *control) drain(stopping bool) {
	c.mu.Lock()
	changed := !c.draining || stopping && !c.stopping
	c.draining = true
	c.stopping = c.stopping || stopping
	c.mu.Unlock()
	if changed {
		c.beat()
	}
}

// reject hands a lease back; c.mu is held.
func (c *control) reject(l *agentrpc.Lease, reason string) {
	if j := c.jobs[l.JobId]; j != nil && leaseKey(j.lease) == leaseKey(l) {
		delete(c.jobs, l.JobId)
	}
	c.out.push(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Rejected{Rejected: &agentrpc.JobRejected{Lease: l, Reason: reason}}}, false)
}

// result reports how a lease ended and forgets it; c.mu is held.
func (c *control) result(l *agentrpc.Lease, r *agentrpc.JobResult) {
	if j := c.jobs[l.JobId]; j != nil && leaseKey(j.lease) == leaseKey(l) {
		delete(c.jobs, l.JobId)
	}
	c.remember(l)
	r.Lease = l
	c.out.push(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Result{Result: r}}, true)
}

// remember keeps a lease that ended, so that a second push of it is
// ignored; c.mu is held.
func (c *control) remember(l *agentrpc.Lease) {
	c.done = append(c.done, leaseKey(l))
	if len(c.done) > doneMemory {
		c.done = slices.Delete(c.done, 0, len(c.done)-doneMemory)
	}
}

// held returns the leases the agent holds: pushed and not yet finished.
func (c *control) held() []*agentrpc.Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*agentrpc.Lease, 0, len(c.jobs))
	for _, j := range c.jobs {
		out = append(out, j.lease)
	}
	slices.SortFunc(out, func(a, b *agentrpc.Lease) int { return strings.Compare(a.JobId, b.JobId) })
	return out
}

func (c *control) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// idle reports whether the agent holds no job.
func (c *control) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.jobs) == 0
}

// Start tells the server that the job runs, unless the agent is shutting
// down: then it hands the job back and returns an error, and the worker
// does not run it.
func (c *control) Start(ctx context.Context, l spec.Lease) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.jobs[l.JobID]
	if j == nil || leaseKey(j.lease) != leaseKey(lease(l)) {
		return errNotHeld
	}
	if c.stopping {
		c.reject(j.lease, reasonShutdown)
		return errShutdown
	}
	c.out.push(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Accepted{Accepted: &agentrpc.JobAccepted{Lease: j.lease}}}, false)
	return nil
}

// StepUpdate reports that a step started.
func (c *control) StepUpdate(ctx context.Context, l spec.Lease, index int, r runner.StepResult) error {
	c.out.push(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Step{Step: &agentrpc.StepUpdate{
		Lease: lease(l), Index: int32(index), Status: string(r.Status),
	}}}, true)
	return nil
}

// AppendLogs queues a batch of log lines; lines is only read during the
// call.
func (c *control) AppendLogs(ctx context.Context, jobID, runID string, lines []spec.LogLine) error {
	c.mu.Lock()
	var l *agentrpc.Lease
	if j := c.jobs[jobID]; j != nil {
		l = j.lease
	}
	c.mu.Unlock()
	if l == nil {
		return fmt.Errorf("logs of job %s: %w", jobID, errNotHeld)
	}
	for len(lines) > 0 {
		b := &agentrpc.LogBatch{Lease: l, RunId: runID, Lines: make([]*agentrpc.LogLine, 0, len(lines))}
		size := 0
		for len(lines) > 0 {
			x := lines[0]
			n := len(x.Text) + len(x.StepID) + 32
			if len(b.Lines) > 0 && size+n > maxBatchBytes {
				break
			}
			size += n
			b.Lines = append(b.Lines, &agentrpc.LogLine{
				Seq: x.Seq, Attempt: int32(x.Attempt), StepId: x.StepID, Stream: x.Stream, Text: x.Text, Time: timestamppb.New(x.Time),
			})
			lines = lines[1:]
		}
		c.out.push(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Logs{Logs: b}}, true)
	}
	return nil
}

// Finish reports how the job ended.
func (c *control) Finish(ctx context.Context, l spec.Lease, res runner.JobResult) error {
	r := &agentrpc.JobResult{Status: string(res.Status), Reason: res.Reason, Steps: make([]*agentrpc.StepResult, len(res.Steps))}
	if res.Err != nil {
		r.Error = res.Err.Error()
	}
	for i, s := range res.Steps {
		r.Steps[i] = &agentrpc.StepResult{
			Status: string(s.Status), ExitCode: int32(s.ExitCode), Outputs: s.Outputs,
			DurationMs: s.Duration.Milliseconds(), Attempts: int32(s.Attempts),
		}
		if s.Err != nil {
			r.Steps[i].Error = s.Err.Error()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.result(lease(l), r)
	return nil
}

// FailLease hands a job back unfinished (the worker stops it because the
// agent shuts down): the server requeues it for its next attempt.
func (c *control) FailLease(ctx context.Context, l spec.Lease, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	pl := lease(l)
	c.remember(pl)
	c.reject(pl, reason)
	return nil
}

// OnCancel calls fn when the server cancels the job, at once if it did
// already.
func (c *control) OnCancel(jobID string, fn func(reason string)) (unregister func()) {
	c.mu.Lock()
	j := c.jobs[jobID]
	if j == nil {
		c.mu.Unlock()
		return func() {}
	}
	j.onCancel = fn
	cancelled, reason := j.cancelled, j.reason
	c.mu.Unlock()
	if cancelled {
		fn(reason)
	}
	return func() {
		c.mu.Lock()
		j.onCancel = nil
		c.mu.Unlock()
	}
}

func lease(l spec.Lease) *agentrpc.Lease {
	return &agentrpc.Lease{JobId: l.JobID, WorkerId: l.WorkerID, Attempt: int32(l.Attempt)}
}

func leaseKey(l *agentrpc.Lease) string {
	return fmt.Sprintf("%s/%s/%d", l.GetJobId(), l.GetWorkerId(), l.GetAttempt())
}
