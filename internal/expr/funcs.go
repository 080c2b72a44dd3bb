package expr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

type fnID uint8

const (
	fnSuccess fnID = iota
	fnFailure
	fnAlways
	fnCancelled
	fnStartsWith
	fnEndsWith
	fnContains
	fnFormat
	fnJoin
	fnToJSON
	fnFromJSON
	fnHashFiles
)

type builtin struct {
	name     string
	id       fnID
	min, max int // number of arguments; max -1: any
}

var builtins = [...]builtin{
	{"success", fnSuccess, 0, 0},
	{"failure", fnFailure, 0, 0},
	{"always", fnAlways, 0, 0},
	{"cancelled", fnCancelled, 0, 0},
	{"startsWith", fnStartsWith, 2, 2},
	{"endsWith", fnEndsWith, 2, 2},
	{"contains", fnContains, 2, 2},
	{"format", fnFormat, 1, -1},
	{"join", fnJoin, 1, 2},
	{"toJSON", fnToJSON, 1, 1},
	{"fromJSON", fnFromJSON, 1, 1},
	{"hashFiles", fnHashFiles, 1, -1},
}

// lookupBuiltin finds a function by its case-insensitive name.
func lookupBuiltin(name string) *builtin {
	for i := range builtins {
		if strings.EqualFold(builtins[i].name, name) {
			return &builtins[i]
		}
	}
	return nil
}

func (b *builtin) arityError(n int) string {
	var want string
	switch {
	case b.min == b.max && b.min == 1:
		want = "1 argument"
	case b.min == b.max:
		want = strconv.Itoa(b.min) + " arguments"
	case b.max < 0:
		want = "at least " + strconv.Itoa(b.min) + " argument"
		if b.min != 1 {
			want += "s"
		}
	default:
		want = strconv.Itoa(b.min) + " to " + strconv.Itoa(b.max) + " arguments"
	}
	return fmt.Sprintf("%s() takes %s, got %d", b.name, want, n)
}

// callBuiltin evaluates a call; args are evaluated except for the status
// functions, which take none.
func callBuiltin(c *call, ctx *Context) (any, error) {
	switch c.fn.id {
	case fnSuccess:
		return ctx.Status == StatusSuccess, nil
	case fnFailure:
		return ctx.Status == StatusFailure, nil
	case fnAlways:
		return true, nil
	case fnCancelled:
		return ctx.Status == StatusCancelled, nil
	}
	var buf [4]any
	args := buf[:0]
	for _, a := range c.args {
		v, err := eval(a, ctx)
		if err != nil {
			return nil, err
		}
		args = append(args, v)
	}
	switch c.fn.id {
	case fnStartsWith:
		s, prefix := String(args[0]), String(args[1])
		return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix), nil
	case fnEndsWith:
		s, suffix := String(args[0]), String(args[1])
		return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix), nil
	case fnContains:
		return contains(args[0], args[1]), nil
	case fnFormat:
		s, err := format(String(args[0]), args[1:])
		if err != nil {
			return nil, fmt.Errorf("format(): %w", err)
		}
		return s, nil
	case fnJoin:
		sep := ","
		if len(args) > 1 {
			sep = String(args[1])
		}
		return join(args[0], sep), nil
	case fnToJSON:
		b, err := marshalJSON(args[0], "  ")
		if err != nil {
			return nil, fmt.Errorf("toJSON(): %w", err)
		}
		return string(b), nil
	case fnFromJSON:
		var v any
		if err := json.Unmarshal([]byte(String(args[0])), &v); err != nil {
			return nil, fmt.Errorf("fromJSON(): %w", err)
		}
		return v, nil
	case fnHashFiles:
		patterns := make([]string, len(args))
		for i, a := range args {
			patterns[i] = String(a)
		}
		h, err := hashFiles(ctx.Dir, patterns)
		if err != nil {
			return nil, fmt.Errorf("hashFiles(): %w", err)
		}
		return h, nil
	}
	panic("expr: unhandled builtin " + c.fn.name)
}

// contains reports whether the array haystack has an element equal (==) to
// needle, or else whether the string form of haystack contains the string
// form of needle, ignoring case.
func contains(haystack, needle any) bool {
	switch h := haystack.(type) {
	case []any:
		for _, e := range h {
			if equal(e, needle) {
				return true
			}
		}
		return false
	case []string:
		for _, e := range h {
			if equal(e, needle) {
				return true
			}
		}
		return false
	}
	s, sub := String(haystack), String(needle)
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func join(v any, sep string) string {
	switch a := v.(type) {
	case []string:
		return strings.Join(a, sep)
	case []any:
		var b strings.Builder
		for i, e := range a {
			if i > 0 {
				b.WriteString(sep)
			}
			b.WriteString(String(e))
		}
		return b.String()
	}
	return String(v)
}

// format replaces {N} in f by String(args[N]); {{ and }} stand for { and }.
func format(f string, args []any) (string, error) {
	if strings.IndexByte(f, '{') < 0 && strings.IndexByte(f, '}') < 0 {
		return f, nil
	}
	var b strings.Builder
	b.Grow(len(f))
	for i := 0; i < len(f); i++ {
		c := f[i]
		switch {
		case c == '{' && i+1 < len(f) && f[i+1] == '{', c == '}' && i+1 < len(f) && f[i+1] == '}':
			b.WriteByte(c)
			i++
		case c == '{':
			j := i + 1
			for j < len(f) && isDigit(f[j]) && j-i <= 6 {
				j++
			}
			if j == i+1 || j >= len(f) || f[j] != '}' {
				return "", fmt.Errorf("invalid placeholder at byte %d of %q", i, f)
			}
			n, _ := strconv.Atoi(f[i+1 : j])
			if n >= len(args) {
				return "", fmt.Errorf("placeholder {%d} of %q has no argument", n, f)
			}
			b.WriteString(String(args[n]))
			i = j
		case c == '}':
			return "", fmt.Errorf("unmatched \"}\" at byte %d of %q", i, f)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// marshalJSON encodes v without escaping <, > and &, indented if indent is
// not empty.
func marshalJSON(v any, indent string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		var uerr *json.UnsupportedValueError
		if errors.As(err, &uerr) {
			return nil, fmt.Errorf("%s cannot be represented in JSON", uerr.Str)
		}
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
