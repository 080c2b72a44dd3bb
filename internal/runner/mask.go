package runner

import (
	"bytes"
	"slices"
	"strings"
)

// mask is what a secret's value becomes in output.
var mask = []byte("***")

// Masker hides secret values in output lines. It is safe for concurrent
// use.
type Masker struct {
	secrets [][]byte // distinct, non-blank, longest first
}

// NewMasker returns a Masker for values. A value that spans several lines
// is masked line by line: each of its lines that is not blank is a secret
// of its own, so that a multi-line secret printed to a line-oriented log is
// hidden on every line.
func NewMasker(values []string) *Masker {
	m := &Masker{}
	seen := make(map[string]bool)
	for _, v := range values {
		for line := range strings.Lines(v) {
			line = strings.TrimRight(line, "\r\n")
			if strings.TrimSpace(line) == "" || seen[line] {
				continue
			}
			seen[line] = true
			m.secrets = append(m.secrets, []byte(line))
		}
	}
	slices.SortStableFunc(m.secrets, func(a, b []byte) int { return len(b) - len(a) })
	return m
}

// Mask returns line with every occurrence of a secret replaced by ***.
// Where occurrences overlap, the union of them becomes one ***. When no
// secret occurs, Mask returns line itself and allocates nothing; otherwise
// it returns a new slice and leaves line unchanged.
func (m *Masker) Mask(line []byte) []byte {
	if m == nil || len(m.secrets) == 0 {
		return line
	}
	first := -1
	for i, s := range m.secrets {
		if bytes.Index(line, s) >= 0 {
			first = i
			break
		}
	}
	if first < 0 {
		return line
	}
	// Collect the spans of all occurrences, overlapping ones included.
	var buf [8]span
	spans := buf[:0]
	for _, s := range m.secrets[first:] {
		for off := 0; off < len(line); {
			j := bytes.Index(line[off:], s)
			if j < 0 {
				break
			}
			spans = append(spans, span{off + j, off + j + len(s)})
			off += j + 1
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	out := make([]byte, 0, len(line))
	pos := 0
	for i := 0; i < len(spans); {
		start, end := spans[i].start, spans[i].end
		for i++; i < len(spans) && spans[i].start <= end; i++ {
			end = max(end, spans[i].end)
		}
		out = append(out, line[pos:start]...)
		out = append(out, mask...)
		pos = end
	}
	return append(out, line[pos:]...)
}

type span struct{ start, end int }
