// Package pki is the identity of agents: the server's certificate authority,
// the server certificate of the gRPC listener, the client certificates that
// agents get for their keys when they register, and the one-time bootstrap
// tokens they register with (token.go).
//
// Keys are ECDSA P-256. An agent's certificate names the agent twice: its
// Subject CommonName is the agent ID and so is its URI SAN
// (urn:oxide:agent:<id>); the CA signs only the public key of a CSR, never
// the names the CSR asks for.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a CA made by LoadOrCreateCA, in its directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem" // mode 0600
)

// Validity periods.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	AgentValidity  = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore, so that a peer whose clock is a little
	// behind accepts a certificate made just now.
	clockSkew = 5 * time.Minute
)

// AgentURIPrefix starts the URI SAN of an agent's certificate.
const AgentURIPrefix = "urn:oxide:agent:"

// Errors of verification, for errors.Is.
var (
	// ErrNoCertificate reports a peer that presented no certificate.
	ErrNoCertificate = errors.New("pki: no client certificate")
	// ErrUntrusted reports a certificate that the CA did not sign, that
	// expired, or that is not an agent's.
	ErrUntrusted = errors.New("pki: certificate not trusted")
	// ErrNoKey reports a CA loaded without its private key: it verifies,
	// but signs nothing.
	ErrNoKey = errors.New("pki: the CA's private key is not available")
)

// CA is a certificate authority. Key is nil for a CA loaded from a
// certificate alone.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
	pool    *x509.CertPool
}

// NewCA makes a self-signed CA whose Subject CommonName is name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Oxide CI"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return newCA(cert, key), nil
}

func newCA(cert *x509.Certificate, key crypto.Signer) *CA {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, CertPEM: pemCert(cert.Raw), Key: key, pool: pool}
}

// LoadOrCreateCA loads the CA kept in dir (CAFile and CAKeyFile) or, when
// neither file exists, makes one and writes them with mode 0600, like
// everything in a data directory (package datadir).
// One file without the other is an error: a CA is not silently replaced.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCA(certPath, keyPath)
	case !errors.Is(certErr, os.ErrNotExist) || !errors.Is(keyErr, os.ErrNotExist):
		return nil, fmt.Errorf("pki: %s and %s go together: one is missing or unreadable (%v; %v)", certPath, keyPath, certErr, keyErr)
	}
	host, _ := os.Hostname()
	ca, err := NewCA("Oxide CA " + host)
	if err != nil {
		return nil, err
	}
	keyPEM, err := MarshalKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The key first: a crash between the two leaves a key without a
	// certificate, which the next start reports rather than overwrites.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, ca.CertPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// writeFile writes a new file (never replacing one) with mode perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// LoadCA loads a CA's certificate from certFile and its private key from
// keyFile. keyFile may be empty: then the key is taken from certFile if it
// holds one too, and else the CA has none (it verifies agents but cannot
// register them: SignCSR and IssueServerCert return ErrNoKey).
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM := certPEM
	if keyFile != "" {
		if keyPEM, err = os.ReadFile(keyFile); err != nil {
			return nil, fmt.Errorf("pki: %w", err)
		}
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, certFile)
	}
	if keyFile != "" && ca.Key == nil {
		return nil, fmt.Errorf("pki: %s holds no private key", keyFile)
	}
	return ca, nil
}

// ParseCA parses a CA certificate (the first CERTIFICATE block of certPEM)
// and its key (the first private key block of keyPEM, if any; the key must
// match the certificate).
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := firstCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("pki: the certificate is not a CA's")
	}
	key, err := ParseKey(keyPEM)
	if errors.Is(err, errNoKeyBlock) {
		return newCA(cert, nil), nil
	}
	if err != nil {
		return nil, err
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, errors.New("pki: the private key does not match the CA certificate")
	}
	return newCA(cert, key), nil
}

// Pool returns a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Fingerprint is the SHA-256 of the CA certificate, "sha256:<hex>": what an
// agent may pin before it has the CA.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint is the SHA-256 of a certificate, "sha256:<hex>".
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// IssueServerCert makes a key and a certificate for a TLS server known by
// hosts (IP addresses or DNS names; duplicates and empty ones are dropped),
// valid for ServerValidity, with the CA's certificate after it in the chain.
func (ca *CA) IssueServerCert(hosts []string) (tls.Certificate, error) {
	if ca.Key == nil {
		return tls.Certificate{}, ErrNoKey
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "oxide-server", Organization: []string{"Oxide CI"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]")
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// SignCSR signs the public key of a PEM certificate signing request as the
// client certificate of agent agentID, valid for AgentValidity, and returns
// it in PEM. The request's signature must verify (its sender holds the
// key); the names it asks for are ignored.
func (ca *CA) SignCSR(csrPEM []byte, agentID string) ([]byte, error) {
	if ca.Key == nil {
		return nil, ErrNoKey
	}
	if agentID == "" {
		return nil, errors.New("pki: no agent ID")
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: the CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: CSR: %w", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("pki: CSR: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: agentID, Organization: []string{"Oxide CI agents"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(AgentValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{agentURI(agentID)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pemCert(der), nil
}

// checkKey accepts ECDSA keys on P-256 or P-384, RSA keys of 2048 bits or
// more, and Ed25519 keys.
func checkKey(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return errors.New("an ECDSA key must be on P-256 or P-384")
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return errors.New("an RSA key must have at least 2048 bits")
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported key type %T", k)
	}
	return nil
}

func agentURI(agentID string) *url.URL {
	u, _ := url.Parse(AgentURIPrefix + url.PathEscape(agentID))
	return u
}

// VerifyAgent checks that chain (a peer's certificates, leaf first) is an
// agent's client certificate signed by the CA and valid now, and returns
// the agent's ID. Errors wrap ErrNoCertificate or ErrUntrusted.
func (ca *CA) VerifyAgent(chain []*x509.Certificate) (string, error) {
	if len(chain) == 0 {
		return "", ErrNoCertificate
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: ca.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	id, err := AgentID(leaf)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	return id, nil
}

// AgentID returns the agent ID that a certificate made by SignCSR names:
// its URI SAN, which must agree with its CommonName. It does not verify
// the certificate (VerifyAgent does).
func AgentID(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		s := u.String()
		if !strings.HasPrefix(s, AgentURIPrefix) {
			continue
		}
		id, err := url.PathUnescape(strings.TrimPrefix(s, AgentURIPrefix))
		if err != nil || id == "" {
			return "", fmt.Errorf("certificate has a malformed agent URI %q", s)
		}
		if id != cert.Subject.CommonName {
			return "", fmt.Errorf("certificate names agent %q in its URI and %q in its subject", id, cert.Subject.CommonName)
		}
		return id, nil
	}
	return "", errors.New("certificate names no agent")
}

// ServerTLS returns the TLS configuration of the gRPC listener: it presents
// cert and asks clients for a certificate without requiring one, so that
// agents can Register without one; the service verifies the certificates
// of Connect with VerifyAgent, and answers a missing or untrusted one with
// an error of its own rather than a failed handshake.
func ServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
	}
}

// ClientTLS returns the TLS configuration of an agent: it trusts roots (the
// CA's pool, from RegisterResponse.ca_certificate) and presents cert, if
// it has one (not yet when it registers). serverName is the host it dials.
func ClientTLS(roots *x509.CertPool, cert *tls.Certificate, serverName string) *tls.Config {
	c := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// NewKey makes an agent's private key (ECDSA P-256).
func NewKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// NewCSR makes a PEM certificate signing request for key, with commonName
// as its subject (informative only: the CA names the agent itself).
func NewCSR(key crypto.Signer, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MarshalKey encodes a private key as a PEM PKCS #8 "PRIVATE KEY" block.
func MarshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

var errNoKeyBlock = errors.New("pki: no private key in PEM")

// ParseKey parses the first private key block of PEM data: PKCS #8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY").
func ParseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errNoKeyBlock
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", block.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("pki: %s: not a signing key", block.Type)
		}
		return s, nil
	}
}

// ParseCerts parses every CERTIFICATE block of PEM data.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("pki: no CERTIFICATE in PEM")
	}
	return certs, nil
}

func firstCert(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCerts(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ak, err1 := x509.MarshalPKIXPublicKey(a)
	bk, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ak, bk)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// serial is a random 128-bit serial number.
func serial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] &= 0x7f // positive
	return new(big.Int).SetBytes(b[:])
}
