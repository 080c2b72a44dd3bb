// Package expr evaluates the ${{ }} expressions of pipeline files and the
// conditions of stages and steps, with the semantics of GitHub Actions
// expressions:
//
//   - literals: strings in single or double quotes (a doubled quote stands
//     for one), numbers (also 0x hex), true, false, null;
//   - paths a.b.c, a['b'], a[0], where names may contain '-' and '_' after
//     the first character (steps.generate-version.outputs.version);
//   - operators, lowest first: ||, &&, == !=, < <= > >=, unary !;
//   - functions success(), failure(), always(), cancelled(), startsWith,
//     endsWith, contains, format, join, toJSON, fromJSON, hashFiles.
//
// || and && yield one of their operands; == and the orderings compare
// strings ignoring case and values of different types as numbers. A
// missing property is null, never an error.
//
// The package keeps no state: callers that evaluate the same text often
// hold on to the parsed *Expr or *Template.
package expr

import (
	"slices"
	"strings"
)

// Status is the job's status so far, for the status functions.
type Status int

// Statuses.
const (
	StatusSuccess Status = iota
	StatusFailure
	StatusCancelled
)

// Context is what an expression sees.
type Context struct {
	// Values maps top-level names to values: "matrix", "steps", "secrets",
	// "variables", "runner", "branch", "ref", "sha", "event",
	// "run_id", and each pipeline variable by its bare name. Values are
	// nil, bool, float64, int (any integer type is read as float64),
	// string, map[string]any, map[string]string, []any, []string.
	Values map[string]any
	Status Status // for success(), failure(), cancelled()
	Dir    string // workspace read by hashFiles(); "" is the current directory
}

// Expr is a parsed expression.
type Expr struct {
	src   string
	root  node
	flags uint8
}

// Parse parses one expression, written without ${{ }}. Errors are
// *SyntaxError; unknown functions and wrong argument counts are errors.
func Parse(src string) (*Expr, error) {
	return parseAt(src, 0)
}

func parseAt(src string, base int) (*Expr, error) {
	root, flags, err := parse(src, base)
	if err != nil {
		return nil, err
	}
	return &Expr{src: src, root: root, flags: flags}, nil
}

// Eval evaluates e. The result is nil, bool, float64, string, or an object
// or array. Errors come only from functions: fromJSON of bad JSON, format
// with a bad format string, hashFiles failing to read a file.
func (e *Expr) Eval(ctx *Context) (any, error) {
	if ctx == nil {
		ctx = &Context{}
	}
	return eval(e.root, ctx)
}

// String returns the source text of e.
func (e *Expr) String() string { return e.src }

// UsesStatus reports whether e calls success(), failure(), always() or
// cancelled().
func (e *Expr) UsesStatus() bool { return e.flags&usesStatus != 0 }

// A Ref is a path that an expression reads, with its constant property
// names: {"steps","build","outputs","v"}, {"matrix","os"}, {"branch"}.
// Offset is where its first name starts: in the source of Parse, or in the
// whole string of ParseTemplate.
type Ref struct {
	Path   []string
	Offset int
}

// Refs returns every path e reads, once each in order of first appearance.
// A path stops at its first index that is not a constant string: a[0].b
// and a[x].b yield {"a"} (and x's own path).
func (e *Expr) Refs() []Ref {
	var refs []Ref
	collectRefs(e.root, &refs)
	return refs
}

func collectRefs(n node, refs *[]Ref) {
	switch n := n.(type) {
	case *ident, *member, *index:
		if r, ok := refOf(n, refs); ok {
			addRef(refs, r)
		}
	case *call:
		for _, a := range n.args {
			collectRefs(a, refs)
		}
	case *not:
		collectRefs(n.x, refs)
	case *binary:
		collectRefs(n.l, refs)
		collectRefs(n.r, refs)
	}
}

// refOf returns the path of n up to its first non-constant index, and
// collects the refs inside that index and any non-path base. It returns
// false when n does not start at an identifier.
func refOf(n node, refs *[]Ref) (Ref, bool) {
	r, _ := refRec(n, refs)
	return r, r.Path != nil
}

func refRec(n node, refs *[]Ref) (r Ref, complete bool) {
	switch n := n.(type) {
	case *ident:
		return Ref{Path: []string{n.name}, Offset: n.pos}, true
	case *member:
		r, ok := refRec(n.x, refs)
		if ok {
			r.Path = append(r.Path, n.name)
		}
		return r, ok
	case *index:
		r, _ := refRec(n.x, refs)
		collectRefs(n.i, refs)
		return r, false
	}
	collectRefs(n, refs)
	return Ref{}, false
}

func addRef(refs *[]Ref, r Ref) {
	if !slices.ContainsFunc(*refs, func(x Ref) bool { return slices.Equal(x.Path, r.Path) }) {
		*refs = append(*refs, r)
	}
}

// Condition evaluates the condition of a stage or step. src is a bare
// expression (possibly spanning lines) or one wholly wrapped in ${{ }}; an
// empty src means success(). An expression that calls no status function is
// evaluated as success() && (src).
func Condition(src string, ctx *Context) (bool, error) {
	if ctx == nil {
		ctx = &Context{}
	}
	s := strings.TrimSpace(src)
	if s == "" {
		return ctx.Status == StatusSuccess, nil
	}
	base := strings.Index(src, s)
	if strings.HasPrefix(s, "${{") {
		if end := exprEnd(s, 3); end == len(s)-2 {
			s = s[3:end]
			base += 3
		}
	}
	e, err := parseAt(s, base)
	if err != nil {
		return false, err
	}
	if !e.UsesStatus() && ctx.Status != StatusSuccess {
		return false, nil
	}
	v, err := eval(e.root, ctx)
	if err != nil {
		return false, err
	}
	return Truthy(v), nil
}
