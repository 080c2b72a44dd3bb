package expr

import (
	"fmt"
	"strconv"
	"strings"
)

// SyntaxError reports an expression that does not parse.
type SyntaxError struct {
	Offset int // byte offset into the string given to Parse or ParseTemplate
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("offset %d: %s", e.Offset, e.Msg)
}

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tLParen
	tRParen
	tLBrack
	tRBrack
	tComma
	tDot
	tNot
	tAnd
	tOr
	tEq
	tNe
	tLt
	tLe
	tGt
	tGe
)

func (k tokKind) String() string {
	switch k {
	case tEOF:
		return "end of expression"
	case tIdent:
		return "identifier"
	case tString:
		return "string"
	case tNumber:
		return "number"
	}
	return strconv.Quote(punct[k])
}

// punct spells the punctuation tokens, indexed by kind.
var punct = [...]string{
	tLParen: "(", tRParen: ")", tLBrack: "[", tRBrack: "]", tComma: ",", tDot: ".",
	tNot: "!", tAnd: "&&", tOr: "||", tEq: "==", tNe: "!=", tLt: "<", tLe: "<=", tGt: ">", tGe: ">=",
}

type token struct {
	kind tokKind
	pos  int     // offset of the first byte, including the lexer's base
	str  string  // identifier name or string value
	num  float64 // number value
}

// lexer splits an expression into tokens on demand.
type lexer struct {
	src  string
	pos  int
	base int // added to every reported offset
}

func (l *lexer) errorf(pos int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Offset: l.base + pos, Msg: fmt.Sprintf(format, args...)}
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }

func isIdentStart(c byte) bool { return isLetter(c) || c == '_' }
func isIdentChar(c byte) bool  { return isLetter(c) || isDigit(c) || c == '_' || c == '-' }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (l *lexer) next() (token, error) {
	src := l.src
	for l.pos < len(src) && isSpace(src[l.pos]) {
		l.pos++
	}
	start := l.pos
	tok := token{pos: l.base + start}
	if start >= len(src) {
		return tok, nil
	}
	c := src[start]
	two := func(second byte, k1, k2 tokKind) {
		if start+1 < len(src) && src[start+1] == second {
			tok.kind = k2
			l.pos += 2
		} else {
			tok.kind = k1
			l.pos++
		}
	}
	switch {
	case isIdentStart(c):
		i := start + 1
		for i < len(src) && isIdentChar(src[i]) {
			i++
		}
		tok.kind, tok.str = tIdent, src[start:i]
		l.pos = i
		return tok, nil
	case isDigit(c) || c == '-' && start+1 < len(src) && isDigit(src[start+1]):
		v, n := scanNumber(src[start:])
		if n == 0 || start+n < len(src) && (isIdentChar(src[start+n]) || src[start+n] == '.') {
			end := start + n
			for end < len(src) && (isIdentChar(src[end]) || src[end] == '.') {
				end++
			}
			return tok, l.errorf(start, "invalid number %q", src[start:end])
		}
		tok.kind, tok.num = tNumber, v
		l.pos = start + n
		return tok, nil
	case c == '\'' || c == '"':
		s, n, ok := scanString(src[start:])
		if !ok {
			return tok, l.errorf(start, "unterminated string")
		}
		tok.kind, tok.str = tString, s
		l.pos = start + n
		return tok, nil
	}
	switch c {
	case '(':
		tok.kind = tLParen
	case ')':
		tok.kind = tRParen
	case '[':
		tok.kind = tLBrack
	case ']':
		tok.kind = tRBrack
	case ',':
		tok.kind = tComma
	case '.':
		tok.kind = tDot
	case '!':
		two('=', tNot, tNe)
		return tok, nil
	case '<':
		two('=', tLt, tLe)
		return tok, nil
	case '>':
		two('=', tGt, tGe)
		return tok, nil
	case '=':
		if start+1 < len(src) && src[start+1] == '=' {
			tok.kind = tEq
			l.pos += 2
			return tok, nil
		}
		return tok, l.errorf(start, `unexpected "=" (use "==" to compare)`)
	case '&':
		if start+1 < len(src) && src[start+1] == '&' {
			tok.kind = tAnd
			l.pos += 2
			return tok, nil
		}
		return tok, l.errorf(start, `unexpected "&" (did you mean "&&"?)`)
	case '|':
		if start+1 < len(src) && src[start+1] == '|' {
			tok.kind = tOr
			l.pos += 2
			return tok, nil
		}
		return tok, l.errorf(start, `unexpected "|" (did you mean "||"?)`)
	default:
		return tok, l.errorf(start, "unexpected character %q", rune(c))
	}
	l.pos++
	return tok, nil
}

// scanString reads a quoted string at the start of s: 'single' or "double",
// where a doubled quote stands for one quote character. It returns the value,
// the number of bytes read and whether the string is terminated.
func scanString(s string) (val string, n int, ok bool) {
	q := s[0]
	escaped := false
	i := 1
	for {
		j := strings.IndexByte(s[i:], q)
		if j < 0 {
			return "", 0, false
		}
		i += j + 1
		if i < len(s) && s[i] == q {
			escaped = true
			i++
			continue
		}
		break
	}
	val = s[1 : i-1]
	if escaped {
		val = strings.ReplaceAll(val, string([]byte{q, q}), string(q))
	}
	return val, i, true
}

// scanNumber reads a number at the start of s: an optional sign, then either
// 0x followed by hex digits or decimal digits with an optional fraction and
// exponent. It returns the value and the number of bytes read, 0 if s does
// not start with a number.
func scanNumber(s string) (float64, int) {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	neg := i > 0 && s[0] == '-'
	if i+2 < len(s) && s[i] == '0' && s[i+1]|0x20 == 'x' && hexVal(s[i+2]) >= 0 {
		var v float64
		i += 2
		for ; i < len(s) && hexVal(s[i]) >= 0; i++ {
			v = v*16 + float64(hexVal(s[i]))
		}
		if neg {
			v = -v
		}
		return v, i
	}
	digits := 0
	for ; i < len(s) && isDigit(s[i]); i++ {
		digits++
	}
	if i+1 < len(s) && s[i] == '.' && isDigit(s[i+1]) {
		for i++; i < len(s) && isDigit(s[i]); i++ {
			digits++
		}
	}
	if digits == 0 {
		return 0, 0
	}
	if i < len(s) && s[i]|0x20 == 'e' {
		j := i + 1
		if j < len(s) && (s[j] == '-' || s[j] == '+') {
			j++
		}
		if j < len(s) && isDigit(s[j]) {
			for j++; j < len(s) && isDigit(s[j]); j++ {
			}
			i = j
		}
	}
	// The syntax is checked above; a range error still yields ±Inf or 0.
	v, _ := strconv.ParseFloat(s[:i], 64)
	return v, i
}

func hexVal(c byte) int {
	switch {
	case isDigit(c):
		return int(c - '0')
	case 'a' <= c|0x20 && c|0x20 <= 'f':
		return int(c|0x20-'a') + 10
	}
	return -1
}
