package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/oxide-ci/oxide/internal/secrets"
)

func newBox(t *testing.T) *secrets.Box {
	t.Helper()
	b, err := secrets.NewBox(bytes.Repeat([]byte{7}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	b := newBox(t)
	ad := secrets.AD("organization", "", "TOKEN")
	for _, plain := range []string{"", "s3cr3t", strings.Repeat("x", 1<<16)} {
		c1 := b.Seal([]byte(plain), ad)
		c2 := b.Seal([]byte(plain), ad)
		if bytes.Equal(c1, c2) {
			t.Errorf("sealing %d bytes twice gave the same ciphertext", len(plain))
		}
		if len(plain) > 0 && bytes.Contains(c1, []byte(plain)) {
			t.Errorf("ciphertext contains the plaintext")
		}
		got, err := b.Open(c1, ad)
		if err != nil || string(got) != plain {
			t.Errorf("Open = %q, %v; want %q", got, err, plain)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	b := newBox(t)
	ad := secrets.AD("pipeline", "p1", "TOKEN")
	c := b.Seal([]byte("value"), ad)

	other, err := secrets.NewBox(bytes.Repeat([]byte{8}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(c)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name string
		box  *secrets.Box
		c    []byte
		ad   []byte
	}{
		{"other secret's name", b, c, secrets.AD("pipeline", "p1", "OTHER")},
		{"other scope id", b, c, secrets.AD("pipeline", "p2", "TOKEN")},
		{"other scope", b, c, secrets.AD("organization", "p1", "TOKEN")},
		// Without length prefixes, these two would be the same bytes.
		{"shifted fields", b, c, secrets.AD("pipeline", "p", "1TOKEN")},
		{"other key", other, c, ad},
		{"altered", b, flipped, ad},
		{"truncated", b, c[:10], ad},
		{"empty", b, nil, ad},
		{"unknown version", b, append([]byte{9}, c[1:]...), ad},
	}
	for _, tt := range tests {
		if _, err := tt.box.Open(tt.c, tt.ad); !errors.Is(err, secrets.ErrDecrypt) {
			t.Errorf("%s: Open err = %v, want ErrDecrypt", tt.name, err)
		}
	}
}

func TestNewBoxKeySize(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := secrets.NewBox(make([]byte, n)); err == nil {
			t.Errorf("NewBox(%d bytes) succeeded", n)
		}
	}
}

func TestLoadKeyFromEnv(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{0xab, 0x01}, secrets.KeySize/2)
	for _, env := range []string{
		hex.EncodeToString(key),
		strings.ToUpper(hex.EncodeToString(key)),
		base64.StdEncoding.EncodeToString(key),
		base64.RawURLEncoding.EncodeToString(key),
		" " + base64.StdEncoding.EncodeToString(key) + "\n",
	} {
		dir := t.TempDir()
		got, err := secrets.LoadKey(dir, env)
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("LoadKey(%q) = %x, %v", env, got, err)
		}
		if _, err := os.Stat(filepath.Join(dir, secrets.KeyFile)); err == nil {
			t.Errorf("LoadKey(%q) wrote a key file", env)
		}
	}
	for _, env := range []string{"short", hex.EncodeToString(key[:16]), base64.StdEncoding.EncodeToString(append(key, 1))} {
		if _, err := secrets.LoadKey(t.TempDir(), env); err == nil {
			t.Errorf("LoadKey(%q) accepted a bad key", env)
		}
	}
}

func TestLoadKeyFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := secrets.LoadKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != secrets.KeySize {
		t.Fatalf("key is %d bytes", len(k1))
	}
	path := filepath.Join(dir, secrets.KeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	k2, err := secrets.LoadKey(dir, "")
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second LoadKey = %x, %v; want the first key %x", k2, err, k1)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the key file", len(entries))
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.LoadKey(dir, ""); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadKey with a world-readable key file: err = %v", err)
	}
}

func TestLoadKeyConcurrentFirstStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := secrets.LoadKey(dir, "")
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatalf("concurrent first starts got different keys")
		}
	}
}
