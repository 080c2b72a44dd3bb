package api

import (
	"strings"
	"unicode/utf8"
)

// checkText refuses text that the stores would keep differently or that
// shows other than it is: a NUL (PostgreSQL refuses it, SQLite keeps it),
// invalid UTF-8, and the bidirectional controls that reorder what a reader
// sees (a right-to-left override makes "exe.txt" of "txt.exe").
func checkText(field, s string) error {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		return invalidf("%s: must not contain a NUL byte", field)
	case !utf8.ValidString(s):
		return invalidf("%s: must be UTF-8", field)
	case strings.ContainsFunc(s, isBidiControl):
		return invalidf("%s: must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)", field)
	}
	return nil
}

func isBidiControl(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

// hasNUL reports whether a string of the JSON document b holds a NUL,
// written \u0000: in valid JSON a backslash only starts an escape.
func hasNUL(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' {
			if strings.HasPrefix(string(b[i+1:min(i+6, len(b))]), "u0000") {
				return true
			}
			i++
		}
	}
	return false
}
