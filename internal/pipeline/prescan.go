package pipeline

import "fmt"

// maxDepth bounds how deeply a definition nests collections, and maxSize
// its length, as the API bounds a request body. The YAML parser's memory
// grows with the square of the depth, so both are checked on the raw bytes
// before the parser sees them.
const (
	maxDepth = 64
	maxSize  = 1 << 20
)

// A prescanner follows the lexical structure of YAML closely enough to
// count the brackets, dashes and indentation that open collections, and
// not the ones inside quoted, block or plain scalars and comments. Its depth
// is an upper bound of the parsed depth, its node count roughly the number
// of scalars and collections.
type prescanner struct {
	line, col  int   // where the scan is, both from 1
	stack      []int // the open block collections, as levels
	flow       int   // depth of open [ and {
	depth      int   // the most that stack and flow may hold
	empty      bool  // the stack's top is a list entry that starts on a later line
	extra      int   // levels that the parser nests where YAML would not
	nodes      int
	quote      byte // the quote of the open quoted scalar, or 0
	block      bool // in the lines of a block scalar (| or >)
	blockMin   int  // its lines are indented more than this
	blockInd   int  // the indentation of its first line, or -1
	plain      bool // the block plain scalar of the last line may go on
	plainMin   int  // on lines indented more than this
	flowPlain  bool // in a plain scalar inside [ ] or { }
	scalarBase int  // the indentation a block scalar's lines must exceed
}

// prescan returns an error at the first place where data is too large or
// nests deeper than depth for the YAML parser to be asked, or nil.
func prescan(file string, data []byte, depth int) *Error {
	if len(data) > maxSize {
		return &Error{File: file, Pos: Pos{Line: 1, Col: 1}, Msg: fmt.Sprintf("the pipeline definition is larger than %d bytes", maxSize)}
	}
	s := prescanner{line: 1, depth: depth}
	for i := 0; i < len(data); s.line++ {
		end := i
		for end < len(data) && data[end] != '\n' {
			end++
		}
		if msg := s.scanLine(data[i:end]); msg != "" {
			return &Error{File: file, Pos: Pos{Line: s.line, Col: s.col}, Msg: msg}
		}
		i = end + 1
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

// scanLine scans one line without its newline; on an error, s.col is where.
func (s *prescanner) scanLine(l []byte) string {
	indent := 0
	for indent < len(l) && l[indent] == ' ' {
		indent++
	}
	blank := indent == len(l) || isSpace(l[indent])
	for j := indent; blank && j < len(l); j++ {
		blank = isSpace(l[j])
	}
	s.col = indent + 1
	switch {
	case s.quote != 0:
		return s.tokens(l, 0)
	case s.block:
		if blank {
			return ""
		}
		if s.blockInd < 0 && indent > s.blockMin {
			s.blockInd = indent
		}
		if s.blockInd >= 0 && indent >= s.blockInd {
			return ""
		}
		s.block = false
	case s.flow > 0:
		return s.tokens(l, 0)
	}
	if blank || l[indent] == '#' {
		return ""
	}
	if s.plain && indent > s.plainMin {
		// The plain scalar of an earlier line goes on, up to a comment.
		return ""
	}
	s.plain = false
	if indent == 0 && (hasPrefix(l, "---") || hasPrefix(l, "...")) && (len(l) == 3 || isSpace(l[3])) {
		s.stack, s.extra, s.empty = s.stack[:0], 0, false
		return s.tokens(l, 3)
	}
	if indent == 0 && l[0] == '%' {
		return "" // a directive
	}
	lv := level(l, indent)
	if s.empty {
		switch top := s.stack[len(s.stack)-1]; {
		case lv > top:
			s.stack = s.stack[:len(s.stack)-1] // this line is the entry
		case lv < top-1:
			// The parser nests a mapping in the column of an empty
			// entry's dash inside it, and the next dash deeper still.
			s.extra += 2
		}
	}
	s.empty = false
	for len(s.stack) > 0 && s.stack[len(s.stack)-1] > lv {
		s.stack = s.stack[:len(s.stack)-1]
	}
	if len(s.stack) == 0 || s.stack[len(s.stack)-1] < lv {
		s.stack = append(s.stack, lv)
	}
	s.scalarBase = -1
	if len(s.stack) > 1 {
		s.scalarBase = s.stack[len(s.stack)-2] / 2
	}
	if msg := s.check(); msg != "" {
		return msg
	}
	return s.tokens(l, indent)
}

// level orders the block node that starts at column col of l among those
// that enclose it: a list whose dashes are in the column of a mapping's
// keys is inside that mapping.
func level(l []byte, col int) int {
	if l[col] == '-' && (col+1 == len(l) || isSpace(l[col+1])) {
		return 2*col + 1
	}
	return 2 * col
}

// top returns the column of the innermost block collection, -1 if none.
func (s *prescanner) top() int {
	if len(s.stack) == 0 {
		return -1
	}
	return s.stack[len(s.stack)-1] / 2
}

// restBlank reports whether l holds only blanks and maybe a comment.
func restBlank(l []byte) bool {
	for i, c := range l {
		if c == '#' && (i == 0 || isSpace(l[i-1])) {
			return true
		}
		if !isSpace(c) {
			return false
		}
	}
	return true
}

func hasPrefix(l []byte, p string) bool { return len(l) >= len(p) && string(l[:len(p)]) == p }

// openFlow counts a flow collection's opening bracket, and checks the
// bounds.
func (s *prescanner) openFlow() string {
	s.flow++
	s.nodes++
	s.flowPlain = false
	return s.check()
}

// check reports a depth or node count over the bounds.
func (s *prescanner) check() string {
	if len(s.stack)+s.flow+s.extra > s.depth {
		return fmt.Sprintf("nesting deeper than %d", s.depth)
	}
	if s.nodes > maxNodes {
		return fmt.Sprintf("more than %d nodes", maxNodes)
	}
	return ""
}

// tokens scans l from offset j, in the state the line starts in.
func (s *prescanner) tokens(l []byte, j int) string {
	start := !s.flowPlain // at the start of a token: a quote opens a scalar
	tagged := false       // after a tag and maybe anchors
	keyed := false        // after a key's colon
	for ; j < len(l); j++ {
		c := l[j]
		s.col = j + 1
		if s.quote != 0 {
			switch {
			case c == '\\' && s.quote == '"':
				j++
			case c == s.quote && s.quote == '\'' && j+1 < len(l) && l[j+1] == '\'':
				j++
			case c == s.quote:
				s.quote, start = 0, false
			}
			continue
		}
		next := byte(' ')
		if j+1 < len(l) {
			next = l[j+1]
		}
		sep := isSpace(next)
		if s.flow > 0 {
			switch {
			case isSpace(c):
				start = !s.flowPlain
				continue
			case c == '#' && (j == 0 || isSpace(l[j-1])):
				return ""
			case c == '[' || c == '{':
				start = true
				if msg := s.openFlow(); msg != "" {
					return msg
				}
			case c == ']' || c == '}':
				s.flow--
				s.flowPlain, start = false, false
			case c == ',':
				s.flowPlain, start = false, true
			case c == ':' && (sep || next == ',' || next == ']' || next == '}' || next == '[' || next == '{'):
				s.flowPlain, start = false, true
			case start && (c == '\'' || c == '"'):
				s.quote = c
				s.nodes++
				if msg := s.check(); msg != "" {
					return msg
				}
			case start && (c == '&' || c == '!' || c == '*'):
				for j+1 < len(l) && !isSpace(l[j+1]) && !isFlowIndicator(l[j+1]) {
					j++
				}
			case !s.flowPlain:
				s.flowPlain, start = true, false
				s.nodes++
				if msg := s.check(); msg != "" {
					return msg
				}
			}
			continue
		}
		// Block context.
		if c != '&' && c != '!' && !isSpace(c) {
			tagged = false
		}
		switch {
		case isSpace(c):
			continue
		case c == '#':
			return ""
		case (c == '-' || c == '?') && sep:
			s.scalarBase = j
			k := j + 1
			for k < len(l) && isSpace(l[k]) {
				k++
			}
			// The entry, even when it starts on a later line: the
			// parser may read one there in the dash's column as nested.
			lv := 2 * k
			s.empty = k == len(l) || l[k] == '#'
			if !s.empty {
				lv = level(l, k)
			}
			s.stack = append(s.stack, lv)
			s.nodes++
			if msg := s.check(); msg != "" {
				return msg
			}
		case c == ':' && sep:
			if msg := s.key(&keyed, j); msg != "" {
				return msg
			}
			s.scalarBase = s.top()
		case c == '[' || c == '{':
			start = true
			if msg := s.openFlow(); msg != "" {
				return msg
			}
		case c == '\'' || c == '"':
			s.quote = c
			s.nodes++
			if msg := s.check(); msg != "" {
				return msg
			}
		case c == '|' || c == '>':
			s.block, s.blockMin, s.blockInd = true, s.scalarBase, -1
			return ""
		case c == '&' || c == '!' || c == '*':
			for j+1 < len(l) && !isSpace(l[j+1]) {
				j++
			}
			tagged = tagged || c == '!'
			if tagged && restBlank(l[j+1:]) {
				// The parser nests the next line in the tagged node, even in
				// the same column.
				s.extra++
				if msg := s.check(); msg != "" {
					return msg
				}
			}
		default:
			// A plain scalar: to a key's colon, a comment or the end of
			// the line, and maybe beyond on more indented lines.
			s.nodes++
			if msg := s.check(); msg != "" {
				return msg
			}
			for ; j < len(l); j++ {
				if l[j] == ':' && (j+1 == len(l) || isSpace(l[j+1])) {
					break
				}
				if l[j] == '#' && isSpace(l[j-1]) {
					break
				}
			}
			if j == len(l) || l[j] == '#' {
				s.plain, s.plainMin = true, s.top()
				return ""
			}
			if msg := s.key(&keyed, j); msg != "" {
				return msg
			}
			s.scalarBase = s.top()
		}
	}
	return ""
}

// key counts a key's colon at column j: the parser nests a second key of
// a line in the first's value.
func (s *prescanner) key(keyed *bool, j int) string {
	if !*keyed {
		*keyed = true
		return ""
	}
	s.stack = append(s.stack, 2*j)
	return s.check()
}

func isFlowIndicator(c byte) bool { return c == ',' || c == '[' || c == ']' || c == '{' || c == '}' }
