package plan

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/oxide-ci/oxide/internal/expr"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/spec"
)

// Run is a compiled run: a pipeline and a trigger turned into the typed,
// versioned form that every later decision of the run reads. It is stored
// once with the run; nothing parses the pipeline again for it, so a parser
// change between releases cannot strand a run in flight.
type Run struct {
	Version  int           `json:"version"` // spec.Version
	Pipeline string        `json:"pipeline"`
	Trigger  Trigger       `json:"trigger"`
	Timeout  time.Duration `json:"timeout,omitempty"` // the whole run's; 0: none
	// Group is the run's concurrency group, evaluated at trigger time;
	// empty: none.
	Group            string  `json:"concurrency_group,omitempty"`
	CancelInProgress bool    `json:"cancel_in_progress,omitempty"`
	Nodes            []*Node `json:"nodes"` // in topological order
	// ReadsOutputs is set when an expression of the run reads steps.*:
	// only then do its decisions and jobs need the outputs of earlier
	// stages.
	ReadsOutputs bool `json:"reads_outputs,omitempty"`
}

// Trigger is what started a run: the revision it builds, the event, and
// the variables it overrides.
type Trigger struct {
	Event     string            `json:"event,omitempty"`
	Branch    string            `json:"branch,omitempty"`
	SHA       string            `json:"sha,omitempty"`
	Ref       string            `json:"ref,omitempty"`
	Variables map[string]string `json:"variables,omitempty"`
	Actor     string            `json:"actor,omitempty"`
}

// DefaultEvent is the event of a run that somebody asked for without
// naming one, with oxide run or through the API: the same on both paths.
const DefaultEvent = "manual"

// Git is the trigger's revision as jobs see it.
func (t Trigger) Git() spec.Git {
	return spec.Git{Branch: t.Branch, Ref: t.Ref, SHA: t.SHA, Event: t.Event}
}

// Node is one stage instance of a compiled run.
type Node struct {
	Index int    `json:"index"`
	Name  string `json:"name"`  // "test (linux, 1.75)" for a matrix instance
	Stage string `json:"stage"` // the stage it was expanded from
	Deps  []int  `json:"deps,omitempty"`
	// Condition gates the node on the control plane; a condition that only
	// the worker can decide travels in Job.Condition instead.
	Condition   *spec.Condition  `json:"condition,omitempty"`
	Approval    *Approval        `json:"approval,omitempty"`
	Retry       *spec.Retry      `json:"retry,omitempty"` // the stage's retry of its whole job
	FailFast    bool             `json:"fail_fast,omitempty"`
	MaxParallel int              `json:"max_parallel,omitempty"` // running instances of Stage at once; 0: any
	Labels      []string         `json:"labels,omitempty"`       // an agent needs them all
	Secrets     []spec.SecretRef `json:"secrets,omitempty"`
	// Job is the node's job as compiled: the parts known once the run
	// starts (outputs of earlier stages, secrets, IDs) are added by
	// Machine.Job.
	Job spec.Job `json:"job"`
}

// Approval is a manual gate before a node runs.
type Approval struct {
	Approvers []string      `json:"approvers,omitempty"` // token names or roles; none: anyone who may approve
	Required  int           `json:"required"`            // approvals needed
	Timeout   time.Duration `json:"timeout,omitempty"`   // 0: none
}

// Compile plans p and compiles it with trigger t. p must have been
// validated by pipeline.Parse.
func Compile(p *pipeline.Pipeline, t Trigger) (*Run, error) {
	g, err := Build(p)
	if err != nil {
		return nil, err
	}
	if t.Event == "" {
		t.Event = DefaultEvent
	}
	if t.Ref == "" && t.Branch != "" {
		t.Ref = "refs/heads/" + t.Branch
	}
	r := &Run{Version: spec.Version, Pipeline: p.Name, Trigger: t, Timeout: p.Timeout}
	if c := p.Concurrency; c != nil && c.Group != "" {
		if strings.Contains(c.Group, "hashFiles") {
			return nil, fmt.Errorf("concurrency group: hashFiles() cannot be used: the group is decided before any workspace exists")
		}
		r.Group, err = expr.Interpolate(c.Group, &expr.Context{Values: gitValues(t)})
		if err != nil {
			return nil, fmt.Errorf("concurrency group: %w", err)
		}
		r.CancelInProgress = c.CancelInProgress
	}
	for _, n := range g.Nodes {
		r.Nodes = append(r.Nodes, compileNode(p, n, t))
	}
	b, err := json.Marshal(r.Nodes)
	if err != nil {
		return nil, err
	}
	r.ReadsOutputs = strings.Contains(string(b), "steps.")
	return r, nil
}

func compileNode(p *pipeline.Pipeline, n *Instance, t Trigger) *Node {
	s := n.Stage
	out := &Node{Index: n.Index, Name: n.Name, Stage: n.Source.Name, Job: spec.Job{
		Version: spec.Version, Pipeline: p.Name, Stage: n.Name, Parallel: s.Parallel, Timeout: s.Timeout,
		Environment: s.Environment, Git: t.Git(), Matrix: n.Matrix,
	}}
	if out.Job.Environment == nil {
		out.Job.Environment = p.Environment
	}
	for _, d := range n.Deps {
		out.Deps = append(out.Deps, d.Index)
	}
	if c := condition(s.Condition); c.NeedsWorker() {
		out.Job.Condition = c
	} else {
		out.Condition = c
	}
	if a := s.Approval; a != nil && a.Required {
		out.Approval = &Approval{Approvers: a.Approvers, Required: max(a.RequiredApprovers, 1), Timeout: time.Duration(a.TimeoutHours) * time.Hour}
	}
	out.Retry = retry(s.Retry)
	if m := n.Source.Matrix; m != nil {
		out.FailFast, out.MaxParallel = m.FailFast, m.MaxParallel
	}
	if s.Agent != nil {
		for _, l := range s.Agent.Labels {
			if l = strings.TrimSpace(l); l != "" {
				out.Labels = append(out.Labels, l)
			}
		}
	}
	out.Job.Variables = append(vars(p.Variables), vars(s.Variables)...)
	for _, k := range slices.Sorted(maps.Keys(t.Variables)) {
		out.Job.Variables = append(out.Job.Variables, spec.Var{Name: k, Value: t.Variables[k]})
	}
	for _, ref := range s.Secrets {
		out.Secrets = append(out.Secrets, secretRef(ref, ""))
	}
	for _, st := range s.Steps {
		for _, ref := range st.Secrets {
			out.Secrets = append(out.Secrets, secretRef(ref, st.ID))
		}
		out.Job.Steps = append(out.Job.Steps, step(st))
	}
	return out
}

func step(s *pipeline.Step) *spec.Step {
	return &spec.Step{
		Name: s.Name, ID: s.ID, Plugin: s.Plugin, With: s.With, Run: s.Run, Shell: s.Shell,
		WorkingDir: s.WorkingDir, Variables: vars(s.Variables), Condition: condition(s.Condition),
		Timeout: s.Timeout, Retry: retry(s.Retry), ContinueOnError: s.ContinueOnError,
	}
}

func condition(c *pipeline.Condition) *spec.Condition {
	if c == nil || c.If == "" && c.Unless == "" {
		return nil
	}
	return &spec.Condition{If: c.If, Unless: c.Unless}
}

func retry(r *pipeline.Retry) *spec.Retry {
	if r == nil || r.MaxAttempts <= 1 {
		return nil
	}
	return &spec.Retry{MaxAttempts: r.MaxAttempts, Delay: r.Delay, ExponentialBackoff: r.ExponentialBackoff, RetryOn: r.RetryOn}
}

func vars(vs pipeline.Vars) spec.Vars {
	var out spec.Vars
	for _, v := range vs {
		out = append(out, spec.Var{Name: v.Name, Value: v.Value})
	}
	return out
}

func secretRef(r pipeline.SecretRef, step string) spec.SecretRef {
	return spec.SecretRef{Name: r.Name, Provider: r.Provider, Path: r.Path, Key: r.Key, Masked: r.Masked, Required: r.Required, Step: step}
}

// gitValues are the expression values of a trigger.
func gitValues(t Trigger) map[string]any {
	return map[string]any{"branch": t.Branch, "sha": t.SHA, "ref": t.Ref, "event": t.Event}
}

// Decode reads a compiled run stored by Encode, or a run stored before
// runs were compiled (its trigger with the pipeline's YAML), which it
// compiles once.
func Decode(b []byte) (*Run, error) {
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("compiled run: %w", err)
	}
	if r.Version == 0 {
		return decodeLegacy(b)
	}
	if r.Version != spec.Version {
		return nil, fmt.Errorf("compiled run: schema version %d, this server reads %d", r.Version, spec.Version)
	}
	return &r, nil
}

// StoredTrigger reads the trigger of a stored run, compiled or stored
// before runs were compiled, without compiling it: what the API and the
// events show of a run.
func StoredTrigger(b []byte) Trigger {
	var t struct {
		Trigger
		Nested *Trigger `json:"trigger"`
	}
	json.Unmarshal(b, &t)
	if t.Nested != nil {
		return *t.Nested
	}
	return t.Trigger
}

// decodeLegacy compiles a run stored before compiled runs: a trigger
// holding the pipeline's definition.
func decodeLegacy(b []byte) (*Run, error) {
	var t struct {
		Trigger
		Definition string `json:"definition"`
	}
	if err := json.Unmarshal(b, &t); err != nil || t.Definition == "" {
		return nil, fmt.Errorf("compiled run: no schema version and no pipeline definition")
	}
	p, err := pipeline.Parse("pipeline.yaml", []byte(t.Definition))
	if err != nil {
		return nil, fmt.Errorf("compiled run: a run stored before compiled runs: %w", err)
	}
	return Compile(p, t.Trigger)
}

// Encode is the stored form of r.
func (r *Run) Encode() ([]byte, error) { return json.Marshal(r) }
