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

import "strings"

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
	// "variables", "env", "runner", "branch", "ref", "sha", "event",
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

// Refs returns every path e reads, once each in order of appearance, with
// its constant property names: {"steps","build","outputs","v"},
// {"matrix","os"}, {"branch"}. A path stops at its first index that is not
// a constant string: a[0].b and a[x].b yield {"a"} (and x's own path).
func (e *Expr) Refs() [][]string {
	var refs [][]string
	collectRefs(e.root, &refs)
	return refs
}

func collectRefs(n node, refs *[][]string) {
	switch n := n.(type) {
	case *ident, *member, *index:
		if p := refPath(n, refs); p != nil {
			addRef(refs, p)
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

// refPath returns the path of n up to its first non-constant index, and
// collects the refs inside that index and any non-path base. The path is
// nil when n does not start at an identifier.
func refPath(n node, refs *[][]string) []string {
	p, _ := refPathRec(n, refs)
	return p
}

func refPathRec(n node, refs *[][]string) (path []string, complete bool) {
	switch n := n.(type) {
	case *ident:
		return []string{n.name}, true
	case *member:
		p, ok := refPathRec(n.x, refs)
		if ok {
			return append(p, n.name), true
		}
		return p, false
	case *index:
		p, _ := refPathRec(n.x, refs)
		collectRefs(n.i, refs)
		return p, false
	}
	collectRefs(n, refs)
	return nil, false
}

func addRef(refs *[][]string, p []string) {
next:
	for _, r := range *refs {
		if len(r) != len(p) {
			continue
		}
		for i := range r {
			if r[i] != p[i] {
				continue next
			}
		}
		return
	}
	*refs = append(*refs, p)
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
