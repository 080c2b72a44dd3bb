package expr

// The AST. Every node is one of these pointer types.
type (
	node any

	literal struct{ v any } // nil, bool, float64 or string

	// ident is a name; pos is its offset, including the parser's base.
	ident struct {
		name string
		pos  int
	}

	// member is x.name or x['name'].
	member struct {
		x    node
		name string
	}

	// index is x[i] for any other i.
	index struct{ x, i node }

	call struct {
		fn   *builtin
		args []node
	}

	not struct{ x node }

	binary struct {
		op   tokKind // tOr, tAnd, tEq, tNe, tLt, tLe, tGt, tGe
		l, r node
	}
)

// maxDepth bounds the nesting of parentheses, brackets, calls and "!".
const maxDepth = 100

type parser struct {
	lex   lexer
	tok   token
	depth int
	flags uint8
}

const (
	usesStatus uint8 = 1 << iota
	usesHashFiles
)

// parse parses src as one expression. Reported offsets are base+offset in src.
func parse(src string, base int) (node, uint8, error) {
	p := parser{lex: lexer{src: src, base: base}}
	if err := p.advance(); err != nil {
		return nil, 0, err
	}
	if p.tok.kind == tEOF {
		return nil, 0, p.errorf("empty expression")
	}
	n, err := p.expr(0)
	if err != nil {
		return nil, 0, err
	}
	if p.tok.kind != tEOF {
		return nil, 0, p.unexpected()
	}
	return n, p.flags, nil
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	p.tok = t
	return err
}

func (p *parser) errorf(format string, args ...any) error {
	return p.lex.errorf(p.tok.pos-p.lex.base, format, args...)
}

func (p *parser) unexpected() error {
	if p.tok.kind == tIdent {
		return p.errorf("unexpected identifier %q", p.tok.str)
	}
	return p.errorf("unexpected %s", p.tok.kind)
}

func (p *parser) expect(k tokKind) error {
	if p.tok.kind != k {
		if p.tok.kind == tEOF {
			return p.errorf("expected %s, found end of expression", k)
		}
		return p.errorf("expected %s, found %s", k, p.describe())
	}
	return p.advance()
}

func (p *parser) describe() string {
	if p.tok.kind == tIdent {
		return "identifier " + p.tok.str
	}
	return p.tok.kind.String()
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("expression nested too deeply")
	}
	return nil
}

func precedence(k tokKind) int {
	switch k {
	case tOr:
		return 1
	case tAnd:
		return 2
	case tEq, tNe:
		return 3
	case tLt, tLe, tGt, tGe:
		return 4
	}
	return 0
}

// expr parses binary operators that bind tighter than minPrec, left to right.
func (p *parser) expr(minPrec int) (node, error) {
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		op := p.tok.kind
		prec := precedence(op)
		if prec <= minPrec {
			return left, nil
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		right, err := p.expr(prec)
		if err != nil {
			return nil, err
		}
		left = &binary{op: op, l: left, r: right}
	}
}

func (p *parser) unary() (node, error) {
	if p.tok.kind != tNot {
		return p.postfix()
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	x, err := p.unary()
	if err != nil {
		return nil, err
	}
	p.depth--
	return &not{x}, nil
}

func (p *parser) postfix() (node, error) {
	x, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		switch p.tok.kind {
		case tDot:
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.tok.kind != tIdent {
				return nil, p.errorf("expected property name after \".\", found %s", p.tok.kind)
			}
			x = &member{x: x, name: p.tok.str}
			if err := p.advance(); err != nil {
				return nil, err
			}
		case tLBrack:
			if err := p.enter(); err != nil {
				return nil, err
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
			i, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect(tRBrack); err != nil {
				return nil, err
			}
			p.depth--
			if lit, ok := i.(*literal); ok {
				if s, ok := lit.v.(string); ok {
					x = &member{x: x, name: s}
					continue
				}
			}
			x = &index{x: x, i: i}
		default:
			return x, nil
		}
	}
}

func (p *parser) primary() (node, error) {
	t := p.tok
	switch t.kind {
	case tString:
		return &literal{t.str}, p.advance()
	case tNumber:
		return &literal{t.num}, p.advance()
	case tLParen:
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.expr(0)
		if err != nil {
			return nil, err
		}
		p.depth--
		return x, p.expect(tRParen)
	case tIdent:
		switch t.str {
		case "true":
			return &literal{true}, p.advance()
		case "false":
			return &literal{false}, p.advance()
		case "null":
			return &literal{nil}, p.advance()
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tLParen {
			return p.call(t)
		}
		return &ident{name: t.str, pos: t.pos}, nil
	}
	return nil, p.unexpected()
}

// call parses the arguments of a call to the function named by name; the
// current token is "(".
func (p *parser) call(name token) (node, error) {
	fn := lookupBuiltin(name.str)
	if fn == nil {
		return nil, p.lex.errorf(name.pos-p.lex.base, "unknown function %q", name.str)
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	c := &call{fn: fn}
	var firstArg int // offset of the first argument, for format()
	if p.tok.kind != tRParen {
		firstArg = p.tok.pos
		for {
			a, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			c.args = append(c.args, a)
			if p.tok.kind != tComma {
				break
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
		}
	}
	if err := p.expect(tRParen); err != nil {
		return nil, err
	}
	p.depth--
	if n := len(c.args); n < fn.min || fn.max >= 0 && n > fn.max {
		return nil, p.lex.errorf(name.pos-p.lex.base, "%s", fn.arityError(n))
	}
	switch fn.id {
	case fnSuccess, fnFailure, fnAlways, fnCancelled:
		p.flags |= usesStatus
	case fnHashFiles:
		p.flags |= usesHashFiles
	case fnFormat:
		// A constant format string is checked now, so that the validator
		// reports it.
		if lit, ok := c.args[0].(*literal); ok {
			if f, ok := lit.v.(string); ok {
				if _, err := format(f, make([]any, len(c.args)-1)); err != nil {
					return nil, p.lex.errorf(firstArg-p.lex.base, "format: %v", err)
				}
			}
		}
	}
	return c, nil
}
