package runner

import (
	"maps"
	"testing"
)

func TestParseOutputs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		want     map[string]string
		problems int
	}{
		{"empty", "", nil, 0},
		{"key=value", "a=1\nb=two words\n", map[string]string{"a": "1", "b": "two words"}, 0},
		{"value with =", "url=https://x/?a=b\n", map[string]string{"url": "https://x/?a=b"}, 0},
		{"empty value", "a=\n", map[string]string{"a": ""}, 0},
		{"later wins", "a=1\na=2\n", map[string]string{"a": "2"}, 0},
		{"crlf", "a=1\r\nb=2\r\n", map[string]string{"a": "1", "b": "2"}, 0},
		{"no final newline", "a=1", map[string]string{"a": "1"}, 0},
		{"heredoc", "notes<<EOF\nline 1\nline 2\nEOF\nafter=x\n", map[string]string{"notes": "line 1\nline 2", "after": "x"}, 0},
		{"heredoc crlf", "n<<END\r\na\r\nEND\r\n", map[string]string{"n": "a"}, 0},
		{"heredoc empty", "n<<EOF\nEOF\n", map[string]string{"n": ""}, 0},
		{"heredoc keeps = and <<", "n<<_D_\nx=1\ny<<z\n_D_\n", map[string]string{"n": "x=1\ny<<z"}, 0},
		{"<< inside a value", "cmd=cat <<EOF\n", map[string]string{"cmd": "cat <<EOF"}, 0},
		{"unterminated heredoc", "n<<EOF\na\nb\n", map[string]string{"n": "a\nb"}, 1},
		{"garbage", "just text\n=nokey\na=1\n", map[string]string{"a": "1"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, problems := parseOutputs([]byte(tt.in))
			if !maps.Equal(got, tt.want) {
				t.Errorf("parseOutputs(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if len(problems) != tt.problems {
				t.Errorf("parseOutputs(%q) problems = %q, want %d", tt.in, problems, tt.problems)
			}
		})
	}
}

func FuzzParseOutputs(f *testing.F) {
	f.Add("a=1\nn<<EOF\nx\nEOF\n")
	f.Fuzz(func(t *testing.T, s string) { parseOutputs([]byte(s)) })
}
