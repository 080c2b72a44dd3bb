package plan

import (
	"fmt"
	"maps"
	"slices"

	"github.com/oxide-ci/oxide/internal/expr"
	"github.com/oxide-ci/oxide/internal/pipeline"
)

// Combination is one matrix instance's values.
type Combination struct {
	Values map[string]any
	keys   []string // the keys that label the instance, in order
}

func (c *Combination) label() []string {
	out := make([]string, len(c.keys))
	for i, k := range c.keys {
		out[i] = expr.String(c.Values[k])
	}
	return out
}

// maxCombinations bounds a matrix, as GitHub Actions does (256).
const maxCombinations = 256

// Expand returns the combinations of m with the semantics of GitHub Actions:
// the cartesian product of the dimensions in file order, minus every
// combination that matches an exclude entry, then each include entry either
// extends the combinations whose dimension values it matches (without
// overwriting any) or, when it matches none, is added as a combination of
// its own. Includes extend only combinations of the product. A nil matrix yields one nil combination.
func Expand(m *pipeline.Matrix) ([]*Combination, error) {
	if m == nil {
		return []*Combination{nil}, nil
	}
	isDim := make(map[string]bool, len(m.Dimensions))
	combos := []*Combination{{Values: map[string]any{}}}
	for _, d := range m.Dimensions {
		isDim[d.Name] = true
		next := make([]*Combination, 0, len(combos)*len(d.Values))
		for _, c := range combos {
			for _, v := range d.Values {
				n := &Combination{Values: make(map[string]any, len(c.Values)+1), keys: append(c.keys[:len(c.keys):len(c.keys)], d.Name)}
				for k, x := range c.Values {
					n.Values[k] = x
				}
				n.Values[d.Name] = v
				next = append(next, n)
			}
		}
		combos = next
		if len(combos) > maxCombinations {
			return nil, fmt.Errorf("matrix has more than %d combinations", maxCombinations)
		}
	}
	if len(m.Dimensions) == 0 {
		combos = nil
	}
	kept := combos[:0]
	for _, c := range combos {
		excluded := false
		for _, ex := range m.Exclude {
			excluded = excluded || matches(c.Values, ex)
		}
		if !excluded {
			kept = append(kept, c)
		}
	}
	combos = kept
	product := len(combos) // includes extend only these, never each other
	for _, inc := range m.Include {
		extended := false
		for _, c := range combos[:product] {
			if !matchesDims(c.Values, inc, isDim) {
				continue
			}
			extended = true
			for k, v := range inc {
				if !isDim[k] {
					c.Values[k] = v
				}
			}
		}
		if !extended {
			c := &Combination{Values: make(map[string]any, len(inc))}
			for _, d := range m.Dimensions {
				if v, ok := inc[d.Name]; ok {
					c.keys = append(c.keys, d.Name)
					c.Values[d.Name] = v
				}
			}
			for _, k := range slices.Sorted(maps.Keys(inc)) {
				if !isDim[k] {
					c.keys = append(c.keys, k)
					c.Values[k] = inc[k]
				}
			}
			combos = append(combos, c)
		}
	}
	if len(combos) > maxCombinations {
		return nil, fmt.Errorf("matrix has more than %d combinations", maxCombinations)
	}
	if len(combos) == 0 {
		return nil, fmt.Errorf("matrix has no combinations left after exclude")
	}
	return combos, nil
}

// matches reports whether every key of want has an equal value in c.
func matches(c, want map[string]any) bool {
	for k, v := range want {
		if x, ok := c[k]; !ok || !equal(x, v) {
			return false
		}
	}
	return true
}

// matchesDims reports whether inc agrees with c on every dimension it names.
func matchesDims(c, inc map[string]any, isDim map[string]bool) bool {
	for k, v := range inc {
		if isDim[k] && !equal(c[k], v) {
			return false
		}
	}
	return true
}

// equal compares matrix values by their text, so that 1.75 and "1.75" match.
func equal(a, b any) bool { return expr.String(a) == expr.String(b) }
