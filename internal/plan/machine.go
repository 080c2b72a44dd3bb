package plan

import (
	"fmt"
	"maps"
	"time"

	"github.com/oxide-ci/oxide/internal/expr"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Machine is the run state machine, the one place that decides what a run
// does next: Next takes an event and returns the actions that follow,
// having applied them to its own state. It does no I/O: oxide run carries
// the actions out in memory, the scheduler in one transaction, from a
// Machine it rebuilds from the store with Restore.
type Machine struct {
	RunID string
	Run   *Run
	Nodes []NodeState // by node index
	// Approvals is false where nobody can approve (oxide run): a node that
	// needs an approval is skipped instead of waiting.
	Approvals bool
	done      bool
}

// NodeState is where a node is.
type NodeState struct {
	// Status is pending, waiting (for an approval), running (its job is
	// queued or runs), or final.
	Status  spec.Status
	Attempt int    // jobs started for the node: 2 and more are stage retries
	Reason  string // why it ended as it did, when its job does not say
	// Outputs are its steps' outputs: step id → key → value.
	Outputs map[string]map[string]string
}

// NewMachine returns the machine of a run that has not begun.
func NewMachine(runID string, r *Run) *Machine {
	m := &Machine{RunID: runID, Run: r, Nodes: make([]NodeState, len(r.Nodes)), Approvals: true}
	for i := range m.Nodes {
		m.Nodes[i].Status = spec.StatusPending
	}
	return m
}

// Event is something that happened to a run.
type Event interface{ event() }

// Events.
type (
	// Advance asks what can happen now: at the start of the run, and when
	// anything outside the events below may have changed (a concurrency
	// group released the run).
	Advance struct{}
	// Finished says a node's job ended.
	Finished struct {
		Node    int
		Status  spec.Status // success, failure, timeout, cancelled or skipped
		Reason  string
		Outputs map[string]map[string]string
	}
	// Approved grants a waiting node's approval.
	Approved struct{ Node int }
	// Rejected refuses it (or its approval expired): the node ends with
	// Status.
	Rejected struct {
		Node   int
		Status spec.Status // cancelled for a rejection, failure for an expiry
		Reason string
	}
	// Cancel ends the run: cancelled, or timeout when its time ran out.
	Cancel struct {
		Status spec.Status
		Reason string
	}
)

func (Advance) event()  {}
func (Finished) event() {}
func (Approved) event() {}
func (Rejected) event() {}
func (Cancel) event()   {}

// Action is what the machine decided; its caller carries it out.
type Action interface{ action() }

// Actions.
type (
	// Start runs a node's job: attempt 1, or a stage retry after Delay.
	Start struct {
		Node    int
		Attempt int
		Delay   time.Duration
	}
	// Wait holds a node for an approval.
	Wait struct{ Node int }
	// End ends a node: its job finished, or it will not run, or no longer
	// runs: Stop says its job is queued or running and must be stopped.
	End struct {
		Node   int
		Status spec.Status
		Reason string
		Stop   bool
	}
	// Finish ends the run.
	Finish struct{ Status spec.Status }
)

func (Start) action()  {}
func (Wait) action()   {}
func (End) action()    {}
func (Finish) action() {}

// Done reports whether the run has finished.
func (m *Machine) Done() bool { return m.done }

// Next applies ev and returns what follows from it, in order.
func (m *Machine) Next(ev Event) []Action {
	if m.done {
		return nil
	}
	var acts []Action
	switch e := ev.(type) {
	case Finished:
		ns := &m.Nodes[e.Node]
		if ns.Status != spec.StatusRunning {
			return nil // ended already: cancelled meanwhile, or a repeated report
		}
		n := m.Run.Nodes[e.Node]
		if retries(n.Retry, e.Status) && ns.Attempt < n.Retry.MaxAttempts {
			ns.Attempt++
			return []Action{Start{Node: e.Node, Attempt: ns.Attempt, Delay: backoff(n.Retry, ns.Attempt)}}
		}
		ns.Status, ns.Reason, ns.Outputs = e.Status, e.Reason, e.Outputs
		acts = append(acts, End{Node: e.Node, Status: e.Status, Reason: e.Reason})
		if n.FailFast && e.Status == spec.StatusFailure {
			acts = append(acts, m.failFast(n)...)
		}
	case Approved:
		if m.Nodes[e.Node].Status != spec.StatusWaiting {
			return nil
		}
		acts = append(acts, m.start(e.Node))
	case Rejected:
		if m.Nodes[e.Node].Status != spec.StatusWaiting {
			return nil
		}
		acts = append(acts, m.end(e.Node, e.Status, e.Reason))
	case Cancel:
		for i := range m.Nodes {
			if !m.Nodes[i].Status.Done() {
				acts = append(acts, m.end(i, e.Status, "not finished: "+e.Reason))
			}
		}
		m.done = true
		return append(acts, Finish{Status: e.Status})
	}
	return append(acts, m.advance()...)
}

// failFast ends the unfinished instances of failed's stage.
func (m *Machine) failFast(failed *Node) []Action {
	var acts []Action
	for _, n := range m.Run.Nodes {
		if n.Stage == failed.Stage && !m.Nodes[n.Index].Status.Done() {
			acts = append(acts, m.end(n.Index, spec.StatusCancelled, "cancelled by fail_fast: "+failed.Name+" failed"))
		}
	}
	return acts
}

// advance starts, holds or skips every pending node whose dependencies are
// done, and finishes the run when every node is done.
func (m *Machine) advance() []Action {
	var acts []Action
	for _, n := range m.Run.Nodes {
		ns := &m.Nodes[n.Index]
		if ns.Status != spec.StatusPending || !m.depsDone(n) {
			continue
		}
		failedDep := m.failedDep(n)
		run, reason, err := m.gate(n, failedDep)
		switch {
		case err != nil:
			acts = append(acts, m.end(n.Index, spec.StatusFailure, "condition: "+err.Error()))
		case !run && failedDep != nil:
			acts = append(acts, m.end(n.Index, spec.StatusSkipped, fmt.Sprintf("dependency %q failed", failedDep.Name)))
		case !run:
			acts = append(acts, m.end(n.Index, spec.StatusSkipped, reason))
		case n.Approval != nil && !m.Approvals:
			acts = append(acts, m.end(n.Index, spec.StatusSkipped, "needs an approval, which only a server can record"))
		case n.Approval != nil:
			ns.Status = spec.StatusWaiting
			acts = append(acts, Wait{Node: n.Index})
		case n.MaxParallel > 0 && m.running(n.Stage) >= n.MaxParallel:
			// stays pending until an instance finishes
		default:
			acts = append(acts, m.start(n.Index))
		}
	}
	if m.allDone() {
		m.done = true
		acts = append(acts, Finish{Status: m.status()})
	}
	return acts
}

func (m *Machine) start(i int) Action {
	m.Nodes[i].Status, m.Nodes[i].Attempt = spec.StatusRunning, 1
	return Start{Node: i, Attempt: 1}
}

func (m *Machine) end(i int, status spec.Status, reason string) Action {
	stop := m.Nodes[i].Status == spec.StatusRunning
	m.Nodes[i].Status, m.Nodes[i].Reason = status, reason
	return End{Node: i, Status: status, Reason: reason, Stop: stop}
}

func (m *Machine) allDone() bool {
	for _, ns := range m.Nodes {
		if !ns.Status.Done() {
			return false
		}
	}
	return true
}

func (m *Machine) depsDone(n *Node) bool {
	for _, d := range n.Deps {
		if !m.Nodes[d].Status.Done() {
			return false
		}
	}
	return true
}

func (m *Machine) running(stage string) int {
	c := 0
	for _, n := range m.Run.Nodes {
		if n.Stage == stage && m.Nodes[n.Index].Status == spec.StatusRunning {
			c++
		}
	}
	return c
}

// failed reports whether node i counts as failed for its dependents and
// the run: it failed, timed out or was cancelled, or it was skipped because
// a dependency had failed.
func (m *Machine) failed(i int) bool {
	switch m.Nodes[i].Status {
	case spec.StatusFailure, spec.StatusTimeout, spec.StatusCancelled:
		return true
	case spec.StatusSkipped:
		return m.failedDep(m.Run.Nodes[i]) != nil
	}
	return false
}

// failedDep is the first dependency of n that failed, or nil.
func (m *Machine) failedDep(n *Node) *Node {
	for _, d := range n.Deps {
		if m.failed(d) {
			return m.Run.Nodes[d]
		}
	}
	return nil
}

// status is the final status of a run that was not cancelled.
func (m *Machine) status() spec.Status {
	for i, ns := range m.Nodes {
		if ns.Status != spec.StatusSkipped && m.failed(i) {
			return spec.StatusFailure
		}
	}
	return spec.StatusSuccess
}

// gate decides whether n's condition lets it start. As in GitHub Actions,
// a node without a status function in its condition runs only when every
// dependency succeeded (or was skipped by its own condition); always() and
// failure() run after a failure. A condition that only the worker can
// decide lets the node start: its job decides.
func (m *Machine) gate(n *Node, failedDep *Node) (run bool, reason string, err error) {
	ctx := &expr.Context{Values: m.values(n), Status: expr.StatusSuccess}
	if failedDep != nil {
		ctx.Status = expr.StatusFailure
	}
	if n.Condition == nil && n.Job.Condition != nil {
		return true, "", nil
	}
	ok, why, err := n.Condition.Eval(ctx)
	if why != nil {
		reason = why.Error()
	}
	return ok, reason, err
}

// values are the expression values that n's condition sees on the control
// plane: git facts, the run ID, matrix, variables (also by their bare
// names) and the outputs of the steps of the nodes done so far.
func (m *Machine) values(n *Node) map[string]any {
	v := gitValues(m.Run.Trigger)
	v["run_id"] = m.RunID
	if n.Job.Matrix != nil {
		v["matrix"] = n.Job.Matrix
	}
	vars := map[string]any{}
	for _, kv := range n.Job.Variables {
		vars[kv.Name] = kv.Value
		if _, reserved := v[kv.Name]; !reserved {
			v[kv.Name] = kv.Value
		}
	}
	v["variables"] = vars
	steps := map[string]any{}
	for id, out := range m.outputs() {
		steps[id] = map[string]any{"outputs": out}
	}
	v["steps"] = steps
	return v
}

// outputs are those of the steps of every node done so far, in node order.
func (m *Machine) outputs() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, ns := range m.Nodes {
		if ns.Status.Done() && ns.Status != spec.StatusSkipped {
			maps.Copy(out, ns.Outputs)
		}
	}
	return out
}

// Job is node i's job for attempt, with what is known once the run is
// under way: IDs, the outputs of earlier stages, whether a dependency
// failed. Secrets, the workspace and the runner are the caller's to add.
func (m *Machine) Job(i int, jobID string, attempt int) spec.Job {
	n := m.Run.Nodes[i]
	job := n.Job
	job.RunID, job.JobID, job.Attempt = m.RunID, jobID, attempt
	job.Steps = append([]*spec.Step(nil), n.Job.Steps...)
	job.Variables = append(spec.Vars(nil), n.Job.Variables...)
	if out := m.outputs(); len(out) > 0 {
		job.Outputs = out
	}
	job.DepsFailed = m.failedDep(n) != nil
	return job
}

func retries(r *spec.Retry, s spec.Status) bool {
	if r == nil {
		return false
	}
	if len(r.RetryOn) == 0 {
		return s == spec.StatusFailure
	}
	for _, on := range r.RetryOn {
		if spec.Status(on) == s {
			return true
		}
	}
	return false
}

// backoff is the delay before attempt (2 and more) of a retried stage.
func backoff(r *spec.Retry, attempt int) time.Duration {
	d := r.Delay
	if r.ExponentialBackoff {
		d <<= attempt - 2
	}
	return d
}
