// Package secrets encrypts secret values for the native secret store.
//
// A Box seals values with AES-256-GCM under one 32-byte key. The key comes
// from OXIDE_SECRET_KEY (base64 or hex) or, when that is unset, from a key file
// that the first start writes, mode 0600, in the server's data directory
// (LoadKey). Every ciphertext is bound to additional data naming what it is
// (AD: the secret's scope, scope ID and name), so that a ciphertext copied
// onto another secret's row does not open there.
//
// The store keeps only ciphertexts; plaintext exists in the server's memory
// while a value is being set, or handed to the job that references it.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of a Box's key: AES-256.
const KeySize = 32

// KeyFile is the name of the key file in the data directory.
const KeyFile = "secret.key"

// version is the first byte of every ciphertext, so that the format (or the
// key, once keys rotate) can change without guessing.
const version byte = 1

// ErrDecrypt reports a ciphertext that does not open: another key sealed
// it, it was altered, or it belongs to another secret (its additional data
// differ).
var ErrDecrypt = errors.New("secrets: cannot decrypt (wrong key, altered ciphertext or another secret's)")

// Box seals and opens secret values. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// NewBox returns a Box that uses key, which must be KeySize bytes.
func NewBox(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secrets: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext, authenticating additionalData with it, and
// returns version || nonce || ciphertext || tag. Every call draws a fresh
// random nonce, so sealing one value twice gives different ciphertexts.
func (b *Box) Seal(plaintext, additionalData []byte) []byte {
	ns := b.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+b.aead.Overhead())
	out[0] = version
	_, _ = rand.Read(out[1:]) // never fails
	return b.aead.Seal(out, out[1:], plaintext, additionalData)
}

// Open decrypts a ciphertext of Seal given the same additionalData; any
// mismatch is ErrDecrypt.
func (b *Box) Open(ciphertext, additionalData []byte) ([]byte, error) {
	ns := b.aead.NonceSize()
	if len(ciphertext) < 1+ns+b.aead.Overhead() || ciphertext[0] != version {
		return nil, ErrDecrypt
	}
	p, err := b.aead.Open(nil, ciphertext[1:1+ns], ciphertext[1+ns:], additionalData)
	if err != nil {
		return nil, ErrDecrypt
	}
	return p, nil
}

// AD returns the additional data that binds a secret's ciphertext to its
// key: scope, scope ID and name, each length-prefixed so that no two keys
// give the same bytes.
func AD(scope, scopeID, name string) []byte {
	const prefix = "oxide-secret/v1"
	b := make([]byte, 0, len(prefix)+3*binary.MaxVarintLen64+len(scope)+len(scopeID)+len(name))
	b = append(b, prefix...)
	for _, s := range []string{scope, scopeID, name} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// LoadKey returns the key: env (the value of OXIDE_SECRET_KEY) when it is
// not empty, else the key in dataDir/KeyFile, which it creates with a new
// random key, mode 0600, when there is none. A key is 32 bytes written in
// hex or base64 (standard or URL alphabet, padded or not). A key file that
// others may read is an error, as for ssh keys.
func LoadKey(dataDir, env string) ([]byte, error) {
	if env = strings.TrimSpace(env); env != "" {
		key, err := decodeKey(env)
		if err != nil {
			return nil, fmt.Errorf("OXIDE_SECRET_KEY: %w", err)
		}
		return key, nil
	}
	path := filepath.Join(dataDir, KeyFile)
	key, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKeyFile(path)
		if errors.Is(err, fs.ErrExist) { // another process made it first
			key, err = readKeyFile(path)
		}
	}
	return key, err
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secret key file %s: mode %04o lets others read it (chmod 600 %s)", path, perm, path)
	}
	b := make([]byte, 256)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	key, err := decodeKey(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return key, nil
}

// createKeyFile writes a new random key to path, failing with fs.ErrExist
// if path exists. The key appears under its name only once fully written.
func createKeyFile(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	key := make([]byte, KeySize)
	_, _ = rand.Read(key)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret-key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	// A hard link fails if path exists, where a rename would replace it.
	err = os.Link(tmp.Name(), path)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		// No hard links here: create it exclusively in place.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	return key, nil
}

// decodeKey decodes a KeySize key written in hex or base64.
func decodeKey(s string) ([]byte, error) {
	if len(s) == 2*KeySize {
		if key, err := hex.DecodeString(s); err == nil {
			return key, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(s); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
			}
			return key, nil
		}
	}
	return nil, fmt.Errorf("key is neither hex nor base64 of %d bytes", KeySize)
}
