package expr

import (
	"fmt"
	"slices"
	"strings"
)

// Template is a string with zero or more ${{ expr }} parts.
type Template struct {
	src   string
	parts []part
}

// part is literal text (e == nil) or an expression with its original text.
type part struct {
	text string // the literal text, or the whole "${{ ... }}"
	e    *Expr
}

// ParseTemplate parses s. Errors are *SyntaxError with an offset into s; an
// unterminated ${{ is an error.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{src: s}
	pos := 0
	for {
		i := strings.Index(s[pos:], "${{")
		if i < 0 {
			break
		}
		start := pos + i
		if start > pos {
			t.parts = append(t.parts, part{text: s[pos:start]})
		}
		end, err := templateExprEnd(s, start)
		if err != nil {
			return nil, err
		}
		e, err := parseInner(s, start+3, end)
		if err != nil {
			return nil, err
		}
		t.parts = append(t.parts, part{text: s[start : end+2], e: e})
		pos = end + 2
	}
	if pos < len(s) {
		t.parts = append(t.parts, part{text: s[pos:]})
	}
	return t, nil
}

// Exprs returns the expressions of t in order.
func (t *Template) Exprs() []*Expr {
	var es []*Expr
	for _, p := range t.parts {
		if p.e != nil {
			es = append(es, p.e)
		}
	}
	return es
}

// Eval returns t with each expression replaced by String of its value.
func (t *Template) Eval(ctx *Context) (string, error) {
	return t.eval(ctx, nil, false)
}

// Partial evaluates only the expressions that read nothing but paths under
// roots (e.g. "matrix") and call no status function and no hashFiles; the
// other expressions stay as they are written, ${{ }} included.
func (t *Template) Partial(ctx *Context, roots ...string) (string, error) {
	return t.eval(ctx, roots, true)
}

func (t *Template) eval(ctx *Context, roots []string, partial bool) (string, error) {
	if len(t.parts) == 1 && t.parts[0].e == nil {
		return t.src, nil
	}
	if ctx == nil {
		ctx = &Context{}
	}
	var b strings.Builder
	b.Grow(len(t.src))
	for _, p := range t.parts {
		if p.e == nil || partial && !p.e.only(roots) {
			b.WriteString(p.text)
			continue
		}
		v, err := eval(p.e.root, ctx)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p.text, err)
		}
		b.WriteString(String(v))
	}
	return b.String(), nil
}

// only reports whether e can be evaluated knowing only the values of roots.
func (e *Expr) only(roots []string) bool {
	if e.flags != 0 {
		return false
	}
	for _, r := range e.Refs() {
		if !slices.Contains(roots, r.Path[0]) {
			return false
		}
	}
	return true
}

// Interpolate replaces each ${{ expr }} in s by String of its value. A
// string without "${{" is returned as is.
func Interpolate(s string, ctx *Context) (string, error) {
	i := strings.Index(s, "${{")
	if i < 0 {
		return s, nil
	}
	if ctx == nil {
		ctx = &Context{}
	}
	var b strings.Builder
	b.Grow(len(s) + 32)
	pos := 0
	for i >= 0 {
		start := pos + i
		b.WriteString(s[pos:start])
		end, err := templateExprEnd(s, start)
		if err != nil {
			return "", err
		}
		str, ok := lookupPath(trimSpace(s[start+3:end]), ctx)
		if !ok {
			e, err := parseInner(s, start+3, end)
			if err != nil {
				return "", err
			}
			v, err := eval(e.root, ctx)
			if err != nil {
				return "", fmt.Errorf("%s: %w", s[start:end+2], err)
			}
			str = String(v)
		}
		b.WriteString(str)
		pos = end + 2
		i = strings.Index(s[pos:], "${{")
	}
	b.WriteString(s[pos:])
	return b.String(), nil
}

// lookupPath returns String of the value of s if s is a plain path
// name(.name)*, the common case that needs no parsing. ok is false for
// anything else.
func lookupPath(s string, ctx *Context) (str string, ok bool) {
	i := identEnd(s, 0)
	if i == 0 {
		return "", false
	}
	var v any
	switch name := s[:i]; name {
	case "true", "false", "null":
		return "", false
	default:
		v = ctx.Values[name]
	}
	for i < len(s) {
		if s[i] != '.' {
			return "", false
		}
		j := identEnd(s, i+1)
		if j == i+1 {
			return "", false
		}
		name := s[i+1 : j]
		if m, isMap := v.(map[string]string); isMap && j == len(s) {
			return m[name], true // without boxing the string in an any
		}
		v = property(v, name)
		i = j
	}
	return String(v), true
}

// identEnd returns the end of the identifier at s[i:], i if there is none.
func identEnd(s string, i int) int {
	if i >= len(s) || !isIdentStart(s[i]) {
		return i
	}
	for i++; i < len(s) && isIdentChar(s[i]); i++ {
	}
	return i
}

// templateExprEnd returns the offset of the "}}" that closes the "${{" at
// s[start:].
func templateExprEnd(s string, start int) (int, error) {
	end := exprEnd(s, start+3)
	if end >= 0 {
		return end, nil
	}
	if end < -1 { // an unterminated string at -end-2
		return 0, &SyntaxError{Offset: -end - 2, Msg: "unterminated string"}
	}
	return 0, &SyntaxError{Offset: start, Msg: `unterminated "${{": missing "}}"`}
}

// exprEnd returns the offset of the first "}}" at or after i that is not
// inside a quoted string, -1 if there is none, or -2-q if the string that
// starts at q is not terminated.
func exprEnd(s string, i int) int {
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				return i
			}
		case '\'', '"':
			_, n, ok := scanString(s[i:])
			if !ok {
				return -2 - i
			}
			i += n - 1
		}
	}
	return -1
}

// parseInner parses the expression s[start:end] of a template.
func parseInner(s string, start, end int) (*Expr, error) {
	for start < end && isSpace(s[start]) {
		start++
	}
	for end > start && isSpace(s[end-1]) {
		end--
	}
	return parseAt(s[start:end], start)
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}
