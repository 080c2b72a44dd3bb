package expr

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// eval evaluates n. Values are nil, bool, float64, string, or whatever
// containers the Context holds (map[string]any, map[string]string, []any,
// []string); integers from the Context are converted to float64.
func eval(n node, ctx *Context) (any, error) {
	switch n := n.(type) {
	case *literal:
		return n.v, nil
	case *ident:
		return normalize(ctx.Values[n.name]), nil
	case *member:
		x, err := eval(n.x, ctx)
		if err != nil {
			return nil, err
		}
		return property(x, n.name), nil
	case *index:
		x, err := eval(n.x, ctx)
		if err != nil {
			return nil, err
		}
		i, err := eval(n.i, ctx)
		if err != nil {
			return nil, err
		}
		return indexValue(x, i), nil
	case *call:
		return callBuiltin(n, ctx)
	case *not:
		x, err := eval(n.x, ctx)
		if err != nil {
			return nil, err
		}
		return !Truthy(x), nil
	case *binary:
		l, err := eval(n.l, ctx)
		if err != nil {
			return nil, err
		}
		switch n.op {
		case tOr:
			if Truthy(l) {
				return l, nil
			}
			return eval(n.r, ctx)
		case tAnd:
			if !Truthy(l) {
				return l, nil
			}
			return eval(n.r, ctx)
		}
		r, err := eval(n.r, ctx)
		if err != nil {
			return nil, err
		}
		switch n.op {
		case tEq:
			return equal(l, r), nil
		case tNe:
			return !equal(l, r), nil
		}
		c, ok := compare(l, r)
		if !ok {
			return false, nil
		}
		switch n.op {
		case tLt:
			return c < 0, nil
		case tLe:
			return c <= 0, nil
		case tGt:
			return c > 0, nil
		case tGe:
			return c >= 0, nil
		}
	}
	panic(fmt.Sprintf("expr: unexpected node %T", n))
}

// normalize converts the integer and float32 types a Context may hold to
// float64.
func normalize(v any) any {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case uint:
		return float64(x)
	case uint64:
		return float64(x)
	case uint32:
		return float64(x)
	case float32:
		return float64(x)
	}
	return v
}

// property returns x.name: a property of an object, or for an array the
// element that name numbers; null when there is none.
func property(x any, name string) any {
	switch m := x.(type) {
	case map[string]any:
		return normalize(m[name])
	case map[string]string:
		if v, ok := m[name]; ok {
			return v
		}
	case []any, []string:
		return indexValue(x, name)
	}
	return nil
}

// indexValue returns x[i]: an element of an array for an integral number
// (or numeric string) in range, a property of an object for a string or a
// number; null otherwise.
func indexValue(x, i any) any {
	switch a := x.(type) {
	case []any:
		if k, ok := arrayIndex(i, len(a)); ok {
			return normalize(a[k])
		}
		return nil
	case []string:
		if k, ok := arrayIndex(i, len(a)); ok {
			return a[k]
		}
		return nil
	}
	switch i.(type) {
	case string, float64:
		return property(x, String(i))
	}
	return nil
}

func arrayIndex(i any, n int) (int, bool) {
	switch i.(type) {
	case float64, string:
	default:
		return 0, false
	}
	f := toNumber(i)
	if f != math.Trunc(f) || f < 0 || f >= float64(n) {
		return 0, false
	}
	return int(f), true
}

// Truthy reports whether v counts as true: false, 0, -0, NaN, "" and null
// are false; everything else, including empty objects and arrays, is true.
func Truthy(v any) bool {
	switch x := normalize(v).(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0 && !math.IsNaN(x)
	case string:
		return x != ""
	}
	return true
}

// String converts v to the string that replaces an expression in a
// template: null is "", booleans are "true" and "false", integral numbers
// have no decimal point, objects and arrays are compact JSON.
func String(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case float64:
		return formatNumber(x)
	}
	switch x := normalize(v).(type) {
	case float64:
		return formatNumber(x)
	case map[string]any, map[string]string, []any, []string:
		if b, err := marshalJSON(x, ""); err == nil {
			return string(b)
		}
	}
	return fmt.Sprint(v)
}

func formatNumber(f float64) string {
	switch {
	case f == 0:
		return "0" // also -0
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == math.Trunc(f) && math.Abs(f) < 1e21:
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// toNumber converts v to a number as the loose comparisons do: null is 0,
// booleans are 0 and 1, strings are parsed (empty or blank is 0), anything
// else is NaN.
func toNumber(v any) float64 {
	switch x := normalize(v).(type) {
	case nil:
		return 0
	case bool:
		if x {
			return 1
		}
		return 0
	case float64:
		return x
	case string:
		return parseNumber(x)
	}
	return math.NaN()
}

func parseNumber(s string) float64 {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	if f, n := scanNumber(s); n == len(s) {
		return f
	}
	switch s {
	case "Infinity", "+Infinity":
		return math.Inf(1)
	case "-Infinity":
		return math.Inf(-1)
	}
	return math.NaN()
}

// equal is the == operator: values of the same type compare directly,
// strings ignoring case, objects and arrays by identity; values of
// different types are compared as numbers.
func equal(a, b any) bool {
	a, b = normalize(a), normalize(b)
	switch x := a.(type) {
	case nil:
		if b == nil {
			return true
		}
	case string:
		if y, ok := b.(string); ok {
			return strings.EqualFold(x, y)
		}
	case float64:
		if y, ok := b.(float64); ok {
			return x == y
		}
	case bool:
		if y, ok := b.(bool); ok {
			return x == y
		}
	default:
		return sameInstance(a, b)
	}
	return toNumber(a) == toNumber(b) // NaN for objects and arrays: false
}

// sameInstance reports whether a and b are the same map or slice.
func sameInstance(a, b any) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if !va.IsValid() || !vb.IsValid() || va.Type() != vb.Type() {
		return false
	}
	switch va.Kind() {
	case reflect.Map:
		return va.UnsafePointer() == vb.UnsafePointer()
	case reflect.Slice:
		return va.UnsafePointer() == vb.UnsafePointer() && va.Len() == vb.Len()
	}
	return false
}

// compare orders a and b for < <= > >=: two strings ignoring case, anything
// else as numbers. ok is false when a number is NaN.
func compare(a, b any) (c int, ok bool) {
	a, b = normalize(a), normalize(b)
	if x, isStr := a.(string); isStr {
		if y, isStr := b.(string); isStr {
			return compareFold(x, y), true
		}
	}
	x, y := toNumber(a), toNumber(b)
	switch {
	case math.IsNaN(x) || math.IsNaN(y):
		return 0, false
	case x < y:
		return -1, true
	case x > y:
		return 1, true
	}
	return 0, true
}

// compareFold compares strings by the upper-case forms of their runes.
func compareFold(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ra, rb = unicode.ToUpper(ra), unicode.ToUpper(rb)
			if ra != rb {
				if ra < rb {
					return -1
				}
				return 1
			}
		}
		a, b = a[na:], b[nb:]
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	}
	return 1
}
