package runner

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// mask is what a secret's value becomes in output.
var mask = []byte("***")

// Masker hides secret values in output lines. It is safe for concurrent
// use.
//
// A line is scanned once whatever the number of secrets (each brings a
// dozen encoded forms): at each position, its next 2 bytes are looked up
// in a bit set of the secrets' first 2 bytes, and only on a hit are the
// secrets compared. One-byte secrets are searched for one by one.
type Masker struct {
	short  [][]byte         // distinct one-byte secrets
	long   [][]byte         // the other distinct secrets
	filter *[1 << 10]uint64 // bit b0 | b1<<8 set for each of long
}

// minEncoded is the length below which an encoded form of a secret is
// not masked: shorter ones would mask ordinary text.
const minEncoded = 6

// NewMasker returns a Masker for values. A value that spans several lines
// is masked line by line: each of its lines that is not blank is a secret
// of its own, so that a multi-line secret printed to a line-oriented log is
// hidden on every line.
//
// The Masker also hides the forms in which a step prints a secret
// encoded, of each value and of each of its lines, when they are at least
// minEncoded long: base64 in the standard and URL alphabets, with and
// without padding, also where the secret is part of a longer encoded text
// (see base64Cores); url.QueryEscape and url.PathEscape; and the inside of
// a JSON string, with and without HTML escaping.
func NewMasker(values []string) *Masker {
	m := &Masker{}
	seen := make(map[string]bool)
	add := func(s string) {
		if strings.TrimSpace(s) == "" || seen[s] {
			return
		}
		seen[s] = true
		if len(s) == 1 {
			m.short = append(m.short, []byte(s))
			return
		}
		m.long = append(m.long, []byte(s))
		if m.filter == nil {
			m.filter = new([1 << 10]uint64)
		}
		p := uint16(s[0]) | uint16(s[1])<<8
		m.filter[p>>6] |= 1 << (p & 63)
	}
	addEncoded := func(s string) {
		for _, e := range encodings(s) {
			if len(e) >= minEncoded {
				add(e)
			}
		}
	}
	for _, v := range values {
		if strings.TrimSpace(v) == "" {
			continue
		}
		if strings.ContainsAny(v, "\r\n") {
			addEncoded(v)
		}
		for line := range strings.Lines(v) {
			line = strings.TrimRight(line, "\r\n")
			if strings.TrimSpace(line) != "" {
				add(line)
				addEncoded(line)
			}
		}
	}
	return m
}

// encodings are the encoded forms of s that a step may print.
func encodings(s string) []string {
	out := []string{url.QueryEscape(s), url.PathEscape(s), jsonString(s, true), jsonString(s, false)}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		raw := enc.WithPadding(base64.NoPadding)
		out = append(out, enc.EncodeToString([]byte(s)), raw.EncodeToString([]byte(s)))
		out = append(out, base64Cores(raw, s)...)
	}
	return out
}

// base64Cores returns, for each of the three offsets at which s can start
// in a longer text (the length before s modulo 3), the base64 characters
// that depend on the bytes of s alone: in any text that holds s at that
// offset, its encoding holds them. The characters at either edge, which
// also depend on the bytes around s, are left out.
func base64Cores(enc *base64.Encoding, s string) []string {
	out := make([]string, 0, 3)
	for off := range 3 {
		buf := make([]byte, off+len(s))
		copy(buf[off:], s)
		e := enc.EncodeToString(buf)
		from, to := (8*off+5)/6, 8*len(buf)/6
		if from < to {
			out = append(out, e[from:to])
		}
	}
	return out
}

// jsonString is s as the inside of a JSON string: encoding/json's form,
// or with escapeHTML false that of an Encoder with SetEscapeHTML(false).
func jsonString(s string, escapeHTML bool) string {
	var b strings.Builder
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(escapeHTML)
	e.Encode(s) // a string always encodes
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// Mask returns line with every occurrence of a secret replaced by ***.
// Where occurrences overlap, the union of them becomes one ***. When no
// secret occurs, Mask returns line itself and allocates nothing; otherwise
// it returns a new slice and leaves line unchanged.
func (m *Masker) Mask(line []byte) []byte {
	if m == nil || m.filter == nil && len(m.short) == 0 {
		return line
	}
	var buf [8]span
	spans := m.find(line, buf[:0])
	if len(spans) == 0 {
		return line
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

// find appends to spans those of all occurrences of secrets in line,
// overlapping ones included, and returns the extended slice.
func (m *Masker) find(line []byte, spans []span) []span {
	for _, s := range m.short {
		for off := 0; off < len(line); {
			j := bytes.Index(line[off:], s)
			if j < 0 {
				break
			}
			spans = append(spans, span{off + j, off + j + len(s)})
			off += j + 1
		}
	}
	if m.filter == nil {
		return spans
	}
	filter := m.filter
	for i := 1; i < len(line); i++ {
		p := uint16(line[i-1]) | uint16(line[i])<<8
		if filter[p>>6]&(1<<(p&63)) == 0 {
			continue
		}
		for _, s := range m.long {
			if bytes.HasPrefix(line[i-1:], s) {
				spans = append(spans, span{i - 1, i - 1 + len(s)})
			}
		}
	}
	return spans
}
