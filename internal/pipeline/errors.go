package pipeline

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a pipeline file.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// ErrorList is every problem found in a pipeline file, sorted by position.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// sorted sorts l by position, then message, and drops the repeats that
// content used through several aliases yields.
func (l ErrorList) sorted() ErrorList {
	slices.SortStableFunc(l, func(a, b *Error) int { return compare(a.Pos, b.Pos, a.Msg, b.Msg) })
	return slices.CompactFunc(l, func(a, b *Error) bool { return *a == *b })
}

// A Warning is something a pipeline asks for that Oxide accepts but does
// not do yet: runs go on without it.
type Warning struct {
	File string
	Pos  Pos
	Msg  string
}

// String returns "FILE:LINE:COL: warning: message".
func (w Warning) String() string {
	return fmt.Sprintf("%s:%d:%d: warning: %s", w.File, w.Pos.Line, w.Pos.Col, w.Msg)
}

// sortWarnings sorts ws as ErrorList.sorted sorts errors.
func sortWarnings(ws []Warning) []Warning {
	slices.SortStableFunc(ws, func(a, b Warning) int { return compare(a.Pos, b.Pos, a.Msg, b.Msg) })
	return slices.Compact(ws)
}

// compare orders problems by position, then message.
func compare(a, b Pos, amsg, bmsg string) int {
	return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col), strings.Compare(amsg, bmsg))
}

// String returns "LINE:COL".
func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// maxSuggest bounds the names that didYouMean compares, as its cost is
// the product of their lengths.
const maxSuggest = 64

// hints are keys of other CI systems whose spelling is far from ours.
var hints = map[string]string{"if": "condition", "runs-on": "agent"}

// didYouMean returns `; did you mean "x"?` for the candidate closest to s,
// or "" when none is close enough to be a likely typo.
func didYouMean(s string, candidates []string) string {
	if h, ok := hints[s]; ok && slices.Contains(candidates, h) {
		return fmt.Sprintf("; did you mean %q?", h)
	}
	if len(s) > maxSuggest {
		return ""
	}
	best, bestDist := "", max(1, len(s)/3)+1
	for _, c := range candidates {
		if len(c) > maxSuggest {
			continue
		}
		if d := editDistance(s, c); d < bestDist && d < min(len(s), len(c)) {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the optimal string alignment distance between a and b:
// the edits (insertions, deletions, substitutions and transpositions of
// adjacent bytes) that turn one into the other.
func editDistance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
