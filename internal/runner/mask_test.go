package runner

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

func TestMask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secrets []string
		line    string
		want    string
	}{
		{"none", nil, "token abc", "token abc"},
		{"no match", []string{"s3cr3t"}, "nothing here", "nothing here"},
		{"one", []string{"s3cr3t"}, "token s3cr3t!", "token ***!"},
		{"repeated", []string{"ab"}, "ab-ab-ab", "***-***-***"},
		{"whole line", []string{"s3cr3t"}, "s3cr3t", "***"},
		{"longest first", []string{"abc", "abcdef"}, "x abcdef y abc", "x *** y ***"},
		{"overlap of two", []string{"abcd", "cdef"}, "abcdef", "***"},
		{"overlap of itself", []string{"aaa"}, "aaaa", "***"},
		{"adjacent", []string{"ab", "cd"}, "abcd", "***"},
		{"multi-line secret, line 1", []string{"line-one\nline-two\n"}, "line-one", "***"},
		{"multi-line secret, line 2", []string{"line-one\r\nline-two"}, "say line-two", "say ***"},
		{"blank lines are not secrets", []string{"a-secret\n\n  \n"}, "a  b", "a  b"},
		{"star in secret", []string{"*", "x*y"}, "x*y *", "*** ***"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tt.line)
			got := NewMasker(tt.secrets).Mask(in)
			if string(got) != tt.want {
				t.Errorf("Mask(%q) with %q = %q, want %q", tt.line, tt.secrets, got, tt.want)
			}
			if string(in) != tt.line {
				t.Errorf("Mask changed its input to %q", in)
			}
		})
	}
}

func TestMaskEncoded(t *testing.T) {
	t.Parallel()
	const secret = `s3cr3t/t0ken?+&"<>!` // 19 bytes: base64 with an edge
	m := NewMasker([]string{secret, "line-one-of-it\nline-two-of-it"})
	jsonOf := func(escapeHTML bool) string {
		var b strings.Builder
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(escapeHTML)
		e.Encode(map[string]string{"token": secret})
		return strings.TrimSpace(b.String())
	}
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct{ name, line string }{
		{"base64", "b64: " + b64([]byte(secret))},
		{"base64 no padding", base64.RawStdEncoding.EncodeToString([]byte(secret)) + "."},
		{"base64 URL", base64.URLEncoding.EncodeToString([]byte(secret))},
		{"base64 URL no padding", "x" + base64.RawURLEncoding.EncodeToString([]byte(secret))},
		{"base64 of echo's line", b64([]byte(secret + "\n"))},
		{"base64 of a multi-line secret", b64([]byte("line-one-of-it\nline-two-of-it"))},
		{"query escape", "https://x/?t=" + url.QueryEscape(secret) + "&a=b"},
		{"path escape", "https://x/" + url.PathEscape(secret) + "/y"},
		{"JSON", jsonOf(true)},
		{"JSON without HTML escaping", jsonOf(false)},
	}
	for off := range 3 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
			blob := enc.EncodeToString([]byte(strings.Repeat("A", off) + "user:" + secret + "@host and more"))
			tests = append(tests, struct{ name, line string }{fmt.Sprintf("in a base64 blob at offset %d", (off+5)%3), blob})
		}
	}
	for _, tt := range tests {
		got := string(m.Mask([]byte(tt.line)))
		if !strings.Contains(got, "***") {
			t.Errorf("%s: Mask(%q) = %q, want it masked", tt.name, tt.line, got)
		}
	}
	// A whole encoded form printed alone is masked whole.
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		line := "b64: " + enc.EncodeToString([]byte(secret)) + "."
		if got := string(m.Mask([]byte(line))); got != "b64: ***." {
			t.Errorf("Mask(%q) = %q, want %q", line, got, "b64: ***.")
		}
	}
}

func TestMaskEncodedShortFormsIgnored(t *testing.T) {
	t.Parallel()
	// base64 of "abc" is "YWJj": too short to mask without masking noise.
	if got := string(NewMasker([]string{"abc"}).Mask([]byte("YWJj abc"))); got != "YWJj ***" {
		t.Errorf("Mask = %q, want %q", got, "YWJj ***")
	}
}

func TestMaskNoAllocWithoutMatch(t *testing.T) {
	line := []byte("an ordinary line of build output")
	for _, m := range []*Masker{nil, NewMasker(nil), NewMasker([]string{"s3cr3t", "other"})} {
		if n := testing.AllocsPerRun(100, func() { m.Mask(line) }); n != 0 {
			t.Errorf("Mask allocates %v times per line without a match", n)
		}
		if got := m.Mask(line); &got[0] != &line[0] {
			t.Errorf("Mask returned a copy of an unchanged line")
		}
	}
}

func BenchmarkMask(b *testing.B) {
	line := []byte(strings.Repeat("compiling crate serde v1.0.200 (registry) ", 2))
	hit := []byte("deploying with token ghp_0123456789abcdef0123456789abcdef to prod")
	var many []string
	for i := range 20 {
		many = append(many, fmt.Sprintf("secret-value-%02d-%x", i, i*7919))
	}
	for _, bc := range []struct {
		name    string
		secrets []string
		line    []byte
	}{
		{"none", nil, line},
		{"3secrets/miss", []string{"ghp_0123456789abcdef0123456789abcdef", "hunter2hunter2", "AKIAEXAMPLEKEY"}, line},
		{"3secrets/hit", []string{"ghp_0123456789abcdef0123456789abcdef", "hunter2hunter2", "AKIAEXAMPLEKEY"}, hit},
		{"20secrets/miss", many, line},
	} {
		m := NewMasker(bc.secrets)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.line)))
			b.ReportAllocs()
			for b.Loop() {
				m.Mask(bc.line)
			}
		})
	}
}

func FuzzMask(f *testing.F) {
	f.Add("s3cr3t", "token s3cr3t and s3cr3t")
	f.Add("aa\nb", "aaab")
	f.Fuzz(func(t *testing.T, secret, line string) {
		got := NewMasker([]string{secret}).Mask([]byte(line))
		for l := range strings.Lines(secret) {
			l = strings.TrimRight(l, "\r\n")
			if strings.TrimSpace(l) != "" && !strings.Contains(l, "*") && bytes.Contains(got, []byte(l)) {
				t.Errorf("Mask(%q) with secret %q = %q still shows %q", line, secret, got, l)
			}
		}
	})
}
