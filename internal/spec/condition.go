package spec

import (
	"errors"
	"fmt"
	"strings"

	"github.com/oxide-ci/oxide/internal/expr"
)

// ErrConditionFalse is wrapped by the reason a condition gives for not
// running a stage or step.
var ErrConditionFalse = errors.New("condition is false")

// Eval decides whether what c guards runs, with ctx.Status as what
// success() and failure() see. If empty means success(); Unless must be
// falsy and carries no implicit success(). When it does not run, why says
// so and wraps ErrConditionFalse. A nil c is an empty condition.
func (c *Condition) Eval(ctx *expr.Context) (run bool, why error, err error) {
	var ifSrc, unless string
	if c != nil {
		ifSrc, unless = c.If, c.Unless
	}
	ok, err := expr.Condition(ifSrc, ctx)
	if err != nil {
		return false, nil, fmt.Errorf("if: %w", err)
	}
	if !ok {
		if strings.TrimSpace(ifSrc) == "" {
			return false, fmt.Errorf("%w: success() (something before it did not succeed)", ErrConditionFalse), nil
		}
		return false, fmt.Errorf("%w: %s", ErrConditionFalse, strings.TrimSpace(ifSrc)), nil
	}
	if strings.TrimSpace(unless) == "" {
		return true, nil, nil
	}
	var skip bool
	if inner, ok := unwrap(unless); ok {
		skip, err = expr.Condition("always() && ("+inner+")", ctx)
	} else {
		// Text with several ${{ }} parts: its interpolation decides.
		var s string
		s, err = expr.Interpolate(unless, ctx)
		skip = Truthy(s)
	}
	if err != nil {
		return false, nil, fmt.Errorf("unless: %w", err)
	}
	if skip {
		return false, fmt.Errorf("%w: unless %s is true", ErrConditionFalse, strings.TrimSpace(unless)), nil
	}
	return true, nil, nil
}

// NeedsWorker reports whether c reads what only the worker that runs the
// job knows: the workspace's files (hashFiles) or the runner context.
func (c *Condition) NeedsWorker() bool {
	if c == nil {
		return false
	}
	for _, src := range []string{c.If, c.Unless} {
		if strings.Contains(src, "hashFiles") || strings.Contains(src, "runner.") {
			return true
		}
	}
	return false
}

// unwrap returns the expression inside "${{ … }}", or src itself when it
// has no ${{ }}. ok is false for text with ${{ }} parts and more.
func unwrap(src string) (string, bool) {
	s := strings.TrimSpace(src)
	if !strings.Contains(s, "${{") {
		return s, true
	}
	if strings.HasPrefix(s, "${{") && strings.HasSuffix(s, "}}") && strings.Count(s, "${{") == 1 {
		return s[3 : len(s)-2], true
	}
	return "", false
}

// Truthy reads an interpolated flag: "", "false", "0" and "null" are
// false, any other text true.
func Truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "0", "null":
		return false
	}
	return true
}
