// Package plan turns a pipeline into the DAG of stage instances that a run
// executes: matrix stages expand into one instance per combination, with
// ${{ matrix.* }} substituted everywhere, and every instance knows the
// instances it waits for. Pure functions, no I/O.
package plan

import (
	"fmt"
	"strings"

	"github.com/oxide-ci/oxide/internal/expr"
	"github.com/oxide-ci/oxide/internal/pipeline"
)

// Graph is a run's DAG. Nodes are in a topological order: every node comes
// after the nodes it depends on.
type Graph struct {
	Nodes []*Instance
}

// Instance is one stage instance of a Graph.
type Instance struct {
	Index  int             // position in Graph.Nodes
	Name   string          // "test (linux, 1.75)" for a matrix instance, else the stage name
	Stage  *pipeline.Stage // the stage with this instance's matrix values substituted
	Source *pipeline.Stage // the stage as written
	Matrix map[string]any  // this instance's combination; nil without a matrix
	Deps   []*Instance     // instances this one waits for
}

// Build plans p. p must have been validated by pipeline.Parse: names are
// unique and the dependencies acyclic.
func Build(p *pipeline.Pipeline) (*Graph, error) {
	byStage := make(map[string][]*Instance, len(p.Stages))
	order, err := topoOrder(p)
	if err != nil {
		return nil, err
	}
	g := &Graph{}
	for _, s := range order {
		deps := dependencies(p, s)
		var depNodes []*Instance
		for _, d := range deps {
			depNodes = append(depNodes, byStage[d]...)
		}
		combos, err := Expand(s.Matrix)
		if err != nil {
			return nil, fmt.Errorf("stage %q: %w", s.Name, err)
		}
		for _, c := range combos {
			n := &Instance{Index: len(g.Nodes), Name: s.Name, Stage: s, Source: s, Deps: depNodes}
			if c != nil {
				n.Matrix = c.Values
				n.Stage, err = substitute(s, c.Values)
				if err != nil {
					return nil, fmt.Errorf("stage %q: %w", s.Name, err)
				}
				n.Name = n.Stage.Name
				if n.Name == s.Name { // the name reads no matrix value: label it
					n.Name += " (" + strings.Join(c.label(), ", ") + ")"
				}
			}
			g.Nodes = append(g.Nodes, n)
			byStage[s.Name] = append(byStage[s.Name], n)
		}
	}
	return g, nil
}

// dependencies returns the names of the stages s waits for: its depends_on,
// or the stage before it in the file when it has no depends_on key.
func dependencies(p *pipeline.Pipeline, s *pipeline.Stage) []string {
	if s.HasDependsOn {
		return s.DependsOn
	}
	for i, t := range p.Stages {
		if t == s && i > 0 {
			return []string{p.Stages[i-1].Name}
		}
	}
	return nil
}

// topoOrder orders the stages so that dependencies come first, keeping file
// order among stages that are ready together.
func topoOrder(p *pipeline.Pipeline) ([]*pipeline.Stage, error) {
	done := make(map[string]bool, len(p.Stages))
	known := make(map[string]bool, len(p.Stages))
	for _, s := range p.Stages {
		known[s.Name] = true
	}
	var order []*pipeline.Stage
	for len(order) < len(p.Stages) {
		progressed := false
		for _, s := range p.Stages {
			if done[s.Name] {
				continue
			}
			ready := true
			for _, d := range dependencies(p, s) {
				if !known[d] {
					return nil, fmt.Errorf("stage %q depends on unknown stage %q", s.Name, d)
				}
				ready = ready && done[d]
			}
			if ready {
				done[s.Name] = true
				order = append(order, s)
				progressed = true
			}
		}
		if !progressed {
			return nil, fmt.Errorf("stages depend on each other in a cycle")
		}
	}
	return order, nil
}

// substitute returns a deep copy of s with every ${{ }} part that reads
// only matrix values evaluated.
func substitute(s *pipeline.Stage, matrix map[string]any) (*pipeline.Stage, error) {
	ctx := &expr.Context{Values: map[string]any{"matrix": matrix}}
	var firstErr error
	out := deepMap(s, func(v string) string {
		if !strings.Contains(v, "${{") {
			return v
		}
		t, err := expr.ParseTemplate(v)
		if err == nil {
			v, err = t.Partial(ctx, "matrix")
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return v
	})
	return out.(*pipeline.Stage), firstErr
}
