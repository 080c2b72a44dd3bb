package plan

import (
	"fmt"
	"strings"

	"github.com/oxide-ci/oxide/internal/expr"
)

// Verdict says what becomes of a stage instance whose dependencies are done.
type Verdict int

// Verdicts.
const (
	Start         Verdict = iota // run it
	Skip                         // skip it; dependents may still run
	SkipFailed                   // skip it because a dependency failed; dependents skip too
	AwaitApproval                // it needs a manual approval first
	Fail                         // its condition cannot be evaluated
)

// Decision is a Verdict with the reason people see.
type Decision struct {
	Verdict Verdict
	Reason  string
}

// Gate decides whether n starts, given the first of its dependencies that
// failed (nil when none did) and the expression values its condition sees.
// As in GitHub Actions, a condition without a status function runs only
// when every dependency succeeded (or was skipped by its own condition);
// always() and failure() run after a failure.
func Gate(n *Node, failedDep *Node, values map[string]any, dir string) Decision {
	status := expr.StatusSuccess
	if failedDep != nil {
		status = expr.StatusFailure
	}
	ctx := &expr.Context{Values: values, Status: status, Dir: dir}
	c := n.Stage.Condition
	if c == nil || c.If == "" {
		if failedDep != nil {
			return Decision{SkipFailed, fmt.Sprintf("dependency %q failed", failedDep.Name)}
		}
	} else {
		ok, err := expr.Condition(c.If, ctx)
		switch {
		case err != nil:
			return Decision{Fail, "condition: " + err.Error()}
		case !ok && failedDep != nil:
			return Decision{SkipFailed, fmt.Sprintf("dependency %q failed", failedDep.Name)}
		case !ok:
			return Decision{Skip, "condition is false: " + strings.TrimSpace(c.If)}
		}
	}
	if c != nil && c.Unless != "" {
		ok, err := expr.Condition("always() && ("+c.Unless+")", ctx)
		switch {
		case err != nil:
			return Decision{Fail, "condition: " + err.Error()}
		case ok:
			return Decision{Skip, "unless is true: " + strings.TrimSpace(c.Unless)}
		}
	}
	if a := n.Stage.Approval; a != nil && a.Required {
		return Decision{AwaitApproval, "waiting for approval"}
	}
	return Decision{Verdict: Start}
}
