package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// BootstrapTokenPrefix starts every bootstrap token, so that secret
// scanners know them.
const BootstrapTokenPrefix = "oxb_"

// Bounds of a bootstrap token's time to live.
const (
	DefaultTokenTTL = time.Hour
	MinTokenTTL     = time.Minute
	MaxTokenTTL     = 30 * 24 * time.Hour
)

// Bounds of labels.
const (
	MaxLabels   = 32
	MaxLabelLen = 64
)

// NewBootstrapToken returns a new bootstrap token (BootstrapTokenPrefix and
// 32 random bytes in unpadded base64url) and its hash, which is all the
// store keeps.
func NewBootstrapToken() (token, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = BootstrapTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken is the SHA-256 of a token in lower-case hex. Looking a token up
// by its hash compares no secret bytes, so timing reveals nothing.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CheckTokenTTL reports a time to live outside [MinTokenTTL, MaxTokenTTL].
func CheckTokenTTL(ttl time.Duration) error {
	if ttl < MinTokenTTL || ttl > MaxTokenTTL {
		return fmt.Errorf("ttl %s: want between %s and %s", ttl, MinTokenTTL, MaxTokenTTL)
	}
	return nil
}

// CheckLabels reports labels that an agent cannot have: empty, longer than
// MaxLabelLen, holding a space, a comma or a control character, or more
// than MaxLabels of them.
func CheckLabels(labels []string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("labels: at most %d, not %d", MaxLabels, len(labels))
	}
	for _, l := range labels {
		if l == "" || len(l) > MaxLabelLen || strings.ContainsFunc(l, func(r rune) bool {
			return r == ',' || unicode.IsSpace(r) || !unicode.IsPrint(r)
		}) {
			return fmt.Errorf("label %q: want 1 to %d characters, without spaces or commas", l, MaxLabelLen)
		}
	}
	return nil
}

// MergeLabels returns a followed by the labels of b that a does not have,
// without duplicates.
func MergeLabels(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range append(append([]string(nil), a...), b...) {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}
