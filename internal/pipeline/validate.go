package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"

	"github.com/oxide-ci/oxide/internal/expr"
)

// A text is a string value that may hold ${{ }} expressions. Texts are
// checked once the whole file is decoded, when every step id and matrix is
// known.
type text struct {
	node  ast.Node // the scalar, for positions
	s     string
	stage *Stage // nil at pipeline level
	cond  bool   // a condition: a bare expression or one wholly in ${{ }}
	// only, when not nil, are the contexts that the text sees: it is
	// evaluated before any stage runs.
	only []string
}

func (d *decoder) addText(n ast.Node, s string, cond bool) {
	if cond || strings.Contains(s, "${{") {
		d.pending = append(d.pending, text{node: n, s: s, stage: d.stage, cond: cond})
	}
}

// validate checks what spans the pipeline: stage names and dependencies,
// step names and ids, and the expressions.
func (d *decoder) validate(p *Pipeline) {
	index := d.checkStageNames(p)
	d.checkDependencies(p, index)
	r := &refs{ids: d.checkSteps(p), vars: variableNames(p)}
	for _, t := range d.pending {
		d.checkText(t, r)
	}
}

// checkStageNames reports duplicate stage names and returns the index of
// each stage by name.
func (d *decoder) checkStageNames(p *Pipeline) map[string]int {
	index := make(map[string]int, len(p.Stages))
	for i, s := range p.Stages {
		if j, dup := index[s.Name]; dup {
			d.errorf(s.Pos, "duplicate stage name %q (first at %s)", s.Name, p.Stages[j].Pos)
		} else if s.Name != "" {
			index[s.Name] = i
		}
	}
	return index
}

// checkDependencies reports unknown stages in depends_on, stages that
// depend on themselves and cycles, counting the implicit dependency of a
// stage without depends_on on the stage before it.
func (d *decoder) checkDependencies(p *Pipeline, index map[string]int) {
	names := make([]string, 0, len(index))
	for _, s := range p.Stages {
		names = append(names, s.Name)
	}
	deps := make([][]int, len(p.Stages))
	for i, s := range p.Stages {
		if !s.HasDependsOn && i > 0 {
			deps[i] = []int{i - 1}
		}
		for k, dep := range s.DependsOn {
			j, ok := index[dep]
			switch {
			case dep == s.Name:
				d.errorf(s.DependsOnPos[k], "stage %q depends on itself", s.Name)
			case !ok:
				d.errorf(s.DependsOnPos[k], "stage %q depends on unknown stage %q%s", s.Name, dep, didYouMean(dep, names))
			default:
				deps[i] = append(deps[i], j)
			}
		}
	}

	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(p.Stages))
	var stack []int
	var visit func(i int)
	visit = func(i int) {
		state[i] = visiting
		stack = append(stack, i)
		for _, j := range deps[i] {
			switch state[j] {
			case unseen:
				visit(j)
			case visiting:
				d.reportCycle(p, stack[slices.Index(stack, j):])
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
	}
	for i := range p.Stages {
		if state[i] == unseen {
			visit(i)
		}
	}
}

// reportCycle reports the cycle in which each stage depends on the next
// and the last on the first, starting at the stage that comes first in the
// file.
func (d *decoder) reportCycle(p *Pipeline, cycle []int) {
	first := slices.Index(cycle, slices.Min(cycle))
	cycle = append(slices.Clone(cycle[first:]), cycle[:first]...)
	names := make([]string, 0, len(cycle)+1)
	for _, i := range cycle {
		names = append(names, p.Stages[i].Name)
	}
	names = append(names, names[0])
	d.errorf(p.Stages[cycle[0]].Pos, "dependency cycle: %s", strings.Join(names, " -> "))
}

// A stepUse is a step in its stage.
type stepUse struct {
	stage *Stage
	step  *Step
}

// checkSteps reports duplicate step names within a stage and step ids used
// twice, and returns the steps by id. Steps whose id defaults to their name
// may share it across stages; a reference to such an id is then ambiguous.
func (d *decoder) checkSteps(p *Pipeline) map[string][]stepUse {
	ids := make(map[string][]stepUse)
	for _, s := range p.Stages {
		names := make(map[string]*Step)
		for _, st := range s.Steps {
			if first, dup := names[st.Name]; dup {
				d.errorf(st.Pos, "duplicate step name %q in stage %q (first at %s)", st.Name, s.Name, first.Pos)
			} else if st.Name != "" {
				names[st.Name] = st
			}
			if st.ID != "" {
				ids[st.ID] = append(ids[st.ID], stepUse{s, st})
			}
		}
	}
	for id, uses := range ids {
		if !slices.ContainsFunc(uses, func(u stepUse) bool { return u.step.ID != u.step.Name }) {
			continue
		}
		for _, u := range uses[1:] {
			d.errorf(u.step.Pos, "duplicate step id %q (first at %s)", id, uses[0].step.Pos)
		}
	}
	return ids
}

// refs is what the references of expressions are checked against.
type refs struct {
	ids  map[string][]stepUse // steps by id
	vars map[*Stage][]string  // variable names a stage's texts see; nil: the pipeline's
}

// variableNames returns, for each stage, the names of the variables of the
// pipeline, the stage and its steps; under nil, every variable name of the
// pipeline, as pipeline-level values are evaluated within each stage.
func variableNames(p *Pipeline) map[*Stage][]string {
	names := func(lists ...Vars) []string {
		var out []string
		for _, l := range lists {
			for _, v := range l {
				out = append(out, v.Name)
			}
		}
		return out
	}
	m := map[*Stage][]string{nil: names(p.Variables)}
	for _, s := range p.Stages {
		m[s] = names(p.Variables, s.Variables)
		for _, st := range s.Steps {
			m[s] = append(m[s], names(st.Variables)...)
		}
		m[nil] = append(m[nil], m[s][len(p.Variables):]...)
	}
	return m
}

// checkText parses the expressions of t and checks what they refer to.
func (d *decoder) checkText(t text, r *refs) {
	var exprs []*expr.Expr
	base := 0
	if t.cond {
		var src string
		if src, base = conditionSource(t.s); src == "" {
			return
		}
		e, err := expr.Parse(src)
		if err != nil {
			d.exprError(t, base, err)
			return
		}
		exprs = append(exprs, e)
	} else {
		tmpl, err := expr.ParseTemplate(t.s)
		if err != nil {
			d.exprError(t, 0, err)
			return
		}
		exprs = tmpl.Exprs()
	}
	for _, e := range exprs {
		for _, ref := range e.Refs() {
			d.checkRef(t, ref.Path, offsetPos(t.node, t.s, base+ref.Offset), r)
		}
	}
}

// conditionSource returns the bare expression of a condition and its
// offset in s, unwrapping a condition wholly written in ${{ }}.
func conditionSource(s string) (string, int) {
	src := strings.TrimSpace(s)
	base := strings.Index(s, src)
	if len(src) >= 5 && strings.HasPrefix(src, "${{") && strings.HasSuffix(src, "}}") {
		src, base = src[3:len(src)-2], base+3
	}
	return src, base
}

func (d *decoder) exprError(t text, base int, err error) {
	var se *expr.SyntaxError
	if !errors.As(err, &se) {
		d.errorf(pos(t.node), "invalid expression: %v", err)
		return
	}
	d.errorf(offsetPos(t.node, t.s, base+se.Offset), "invalid expression: %s", se.Msg)
}

// contexts are the names an expression may start with besides the
// pipeline's variables.
var contexts = []string{"branch", "event", "matrix", "ref", "run_id", "runner", "secrets", "sha", "steps", "variables"}

// runnerKeys are the properties of the runner context.
var runnerKeys = []string{"os", "arch", "name"}

// githubContexts maps properties of GitHub's github context to Oxide's
// contexts.
var githubContexts = map[string]string{"sha": "sha", "ref": "ref", "ref_name": "branch", "head_ref": "branch",
	"event_name": "event", "run_id": "run_id"}

// checkRef checks the path ref, read at p: its root must be a context or a
// variable; matrix.<key> must name a dimension or include key of the
// stage's matrix, steps.<id> a step of the pipeline, runner.<key> one of
// runnerKeys.
func (d *decoder) checkRef(t text, ref []string, p Pos, r *refs) {
	root, name := ref[0], ""
	if len(ref) > 1 {
		name = ref[1]
	}
	switch root {
	case "branch", "event", "ref", "run_id", "secrets", "sha", "variables":
	case "matrix":
		d.checkMatrixRef(t, name, p)
	case "steps":
		if name != "" {
			d.checkStepRef(name, p, r.ids)
		}
	case "runner":
		if name != "" && !slices.Contains(runnerKeys, name) {
			d.errorf(p, "unknown property runner.%s; runner has os, arch and name%s", name, didYouMean(name, runnerKeys))
		}
	default:
		if !slices.Contains(r.vars[t.stage], root) {
			d.errorf(p, "%s", unknownContext(root, name, r.vars[t.stage]))
			return
		}
	}
	if t.only != nil && !slices.Contains(t.only, root) {
		d.errorf(p, "`%s` is not known when a run is triggered: this value sees only %s", root, strings.Join(t.only, ", "))
	}
}

// unknownContext explains an unknown name at the root of a path, with
// Oxide's word for the contexts of other CI systems.
func unknownContext(root, name string, vars []string) string {
	if name == "" {
		name = "NAME"
	}
	switch root {
	case "github":
		if c, ok := githubContexts[name]; ok {
			return fmt.Sprintf("unknown context `github`; Oxide's is `%s`", c)
		}
		return "unknown context `github`; Oxide's are `branch`, `ref`, `sha`, `event` and `run_id`"
	case "env":
		return fmt.Sprintf("`env` is not an expression context: use $%s in run, or ${{ variables.%s }}", name, name)
	case "vars":
		return fmt.Sprintf("unknown context `vars`; Oxide's is `variables`: ${{ variables.%s }}", name)
	case "inputs":
		return fmt.Sprintf("unknown context `inputs`: a pipeline has no inputs; use ${{ variables.%s }}, set with --var or a trigger's variables", name)
	case "needs":
		return "unknown context `needs`: read an earlier stage's outputs as ${{ steps.<id>.outputs.<key> }}"
	case "job":
		return "unknown context `job`: a job's status is success(), failure() or cancelled()"
	}
	if hint := didYouMean(root, append(slices.Clip(contexts), vars...)); hint != "" {
		return fmt.Sprintf("unknown context or variable `%s`%s", root, hint)
	}
	return fmt.Sprintf("unknown context or variable `%s`: the contexts are %s; a variable must be defined under variables",
		root, strings.Join(contexts, ", "))
}

// checkMatrixRef checks matrix.<name>, read at p.
func (d *decoder) checkMatrixRef(t text, name string, p Pos) {
	switch {
	case t.stage == nil || name == "":
		// Pipeline-level values are evaluated in each stage.
	case t.stage.Matrix == nil:
		d.errorf(p, "matrix.%s: stage %q has no matrix", name, t.stage.Name)
	case !slices.Contains(matrixKeysOf(t.stage.Matrix), name):
		d.errorf(p, "unknown matrix key %q in stage %q%s", name, t.stage.Name, didYouMean(name, matrixKeysOf(t.stage.Matrix)))
	}
}

// checkStepRef checks steps.<id>, read at p.
func (d *decoder) checkStepRef(id string, p Pos, ids map[string][]stepUse) {
	ref := "steps." + id
	switch uses := ids[id]; len(uses) {
	case 0:
		known := make([]string, 0, len(ids))
		for id := range ids {
			known = append(known, id)
		}
		slices.Sort(known)
		d.errorf(p, "%s: unknown step id %q%s", ref, id, didYouMean(id, known))
	case 1:
	default:
		var stages []string
		for _, u := range uses {
			if q := strconv.Quote(u.stage.Name); !slices.Contains(stages, q) {
				stages = append(stages, q)
			}
		}
		d.errorf(p, "%s is ambiguous: stages %s each have a step with id %q; give the steps distinct ids", ref, strings.Join(stages, ", "), id)
	}
}

// matrixKeysOf returns the dimension names and include keys of m.
func matrixKeysOf(m *Matrix) []string {
	var keys []string
	for _, dim := range m.Dimensions {
		keys = append(keys, dim.Name)
	}
	for _, inc := range m.Include {
		for k := range inc {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// offsetPos returns the position of byte off of s, the value of scalar n.
// It is exact for single-line scalars without escapes and for literal
// block scalars (|); for folded scalars it is where the scalar starts.
func offsetPos(n ast.Node, s string, off int) Pos {
	p := pos(n)
	off = min(max(off, 0), len(s))
	switch v := n.(type) {
	case *ast.StringNode:
		if strings.Contains(strings.TrimSpace(v.Token.Origin), "\n") {
			return p
		}
		if v.Token.Type == token.DoubleQuoteType || v.Token.Type == token.SingleQuoteType {
			p.Col++
		}
		p.Col += utf8.RuneCountInString(s[:off])
	case *ast.LiteralNode:
		if !strings.HasPrefix(v.Start.Value, "|") || v.Value == nil || v.Value.Token == nil {
			return p
		}
		origin := v.Value.Token.Origin
		indent := len(origin) - len(strings.TrimLeft(origin, " \n"))
		indent -= strings.LastIndex(origin[:indent], "\n") + 1
		lineStart := strings.LastIndex(s[:off], "\n") + 1
		p.Line += 1 + strings.Count(s[:off], "\n")
		p.Col = indent + 1 + utf8.RuneCountInString(s[lineStart:off])
	}
	return p
}
