package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/oxide-ci/oxide/internal/agentrpc"
)

// Files of the agent's identity in its data directory.
const (
	KeyFile  = "agent-key.pem" // the agent's private key, ECDSA P-256, 0600
	CertFile = "agent.pem"     // its client certificate, signed by the server's CA
	CAFile   = "ca.pem"        // the server's CA
	InfoFile = "agent.json"    // agent ID and labels; written last
)

// ErrNotRegistered is returned by LoadIdentity when the data directory
// holds no identity: the agent must register with a bootstrap token.
var ErrNotRegistered = errors.New("agent is not registered")

// Identity is who the agent is to the server: its ID, its client
// certificate and the CA that the server's certificate chains to.
type Identity struct {
	AgentID string   `json:"agent_id"`
	Labels  []string `json:"labels"` // as the server recorded them
	Server  string   `json:"server"` // where it registered

	cert tls.Certificate
	ca   *x509.Certificate
}

// CAFingerprint returns the SHA-256 fingerprint of the server's CA,
// "sha256:<hex>".
func (id *Identity) CAFingerprint() string { return fingerprint(id.ca) }

// RegisterOptions are the optional parts of a registration.
type RegisterOptions struct {
	// CAFile verifies the server with this CA (PEM). Empty: trust the
	// server's certificate on first use, and report the fingerprint of the
	// CA it returns through Logf.
	CAFile   string
	Name     string // default: the hostname
	Capacity int
	Version  string
	// Logf, if not nil, receives what the user should know (the CA
	// fingerprint on first use).
	Logf func(format string, args ...any)
}

// Register exchanges a one-time bootstrap token for the agent's identity:
// it makes a key (written 0600 to dataDir/agent-key.pem), sends a
// certificate signing request with the token, and stores the certificate,
// the server's CA and the agent ID beside it. LoadIdentity reads them on
// later starts.
func Register(ctx context.Context, serverAddr, token string, labels []string, dataDir string, opts RegisterOptions) (*Identity, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: a bootstrap token is needed to register", ErrNotRegistered)
	}
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	host, err := serverHost(serverAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if err := writeFile(filepath.Join(dataDir, KeyFile), keyPEM); err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: opts.Name}}, key)
	if err != nil {
		return nil, err
	}

	// TLS without a client certificate: verify the server with the given
	// CA, or keep its chain to check against the CA it returns.
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	var peer []*x509.Certificate
	if opts.CAFile != "" {
		b, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", opts.CAFile)
		}
	} else {
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			peer = cs.PeerCertificates
			return nil
		}
	}
	cc, err := grpc.NewClient(serverAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	req := &agentrpc.RegisterRequest{
		Token: token, Name: opts.Name, Labels: labels, Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
		Version: opts.Version, Os: runtime.GOOS, Arch: runtime.GOARCH, Capacity: int32(opts.Capacity),
	}
	// Wait for the server to be reachable (it may be starting), but send
	// the token once: it is spent whatever the outcome.
	if err := preflight(ctx, serverAddr, tc, 30*time.Second); err != nil {
		return nil, fmt.Errorf("register with %s: %w", serverAddr, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentrpc.NewAgentClient(cc).Register(rctx, req)
	if err != nil {
		if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
			return nil, fmt.Errorf("register with %s: %s: %s", serverAddr, s.Code(), s.Message())
		}
		return nil, fmt.Errorf("register with %s: %w", serverAddr, err)
	}

	id := &Identity{AgentID: resp.AgentId, Labels: resp.Labels, Server: serverAddr}
	if id.AgentID == "" {
		return nil, errors.New("register: the server returned no agent ID")
	}
	if id.ca, err = parseCert(resp.CaCertificate); err != nil {
		return nil, fmt.Errorf("register: CA certificate: %w", err)
	}
	if id.cert, err = tls.X509KeyPair(resp.Certificate, keyPEM); err != nil {
		return nil, fmt.Errorf("register: certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(id.ca)
	if _, err := id.cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("register: the certificate is not for client authentication by the returned CA: %w", err)
	}
	if opts.CAFile == "" {
		// Trust on first use: the server we talked to must present a
		// certificate of the CA it gave us, else reconnecting would fail.
		if len(peer) == 0 {
			return nil, errors.New("register: the server presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range peer[1:] {
			inter.AddCert(c)
		}
		if _, err := peer[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err != nil {
			return nil, fmt.Errorf("register: the server's certificate does not verify with the CA it returned: %w", err)
		}
		opts.Logf("trusting the server's CA on first use: %s, fingerprint %s (pass --ca to verify it instead)", id.ca.Subject.CommonName, fingerprint(id.ca))
	}
	if err := writeFile(filepath.Join(dataDir, CertFile), resp.Certificate); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dataDir, CAFile), resp.CaCertificate); err != nil {
		return nil, err
	}
	info, _ := json.MarshalIndent(id, "", "  ")
	if err := writeFile(filepath.Join(dataDir, InfoFile), append(info, '\n')); err != nil {
		return nil, err
	}
	return id, nil
}

// preflight waits until a TLS handshake with the server succeeds, for up
// to wait; a certificate that does not verify fails at once.
func preflight(ctx context.Context, addr string, tc *tls.Config, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tc = tc.Clone()
	tc.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: tc}
	delay := minBackoff
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(jitter(delay)):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// LoadIdentity reads the identity that Register stored in dataDir.
func LoadIdentity(dataDir string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, InfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotRegistered
	} else if err != nil {
		return nil, err
	}
	id := &Identity{}
	if err := json.Unmarshal(b, id); err != nil {
		return nil, fmt.Errorf("%s: %w", InfoFile, err)
	}
	if id.AgentID == "" {
		return nil, fmt.Errorf("%s: no agent_id", InfoFile)
	}
	if id.cert, err = tls.LoadX509KeyPair(filepath.Join(dataDir, CertFile), filepath.Join(dataDir, KeyFile)); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dataDir, CAFile))
	if err != nil {
		return nil, err
	}
	if id.ca, err = parseCert(caPEM); err != nil {
		return nil, fmt.Errorf("%s: %w", CAFile, err)
	}
	return id, nil
}

// tlsConfig is the mTLS configuration of the agent's connections to
// serverAddr.
func (id *Identity) tlsConfig(serverAddr string) (*tls.Config, error) {
	host, err := serverHost(serverAddr)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(id.ca)
	return &tls.Config{
		ServerName: host, RootCAs: roots, Certificates: []tls.Certificate{id.cert}, MinVersion: tls.VersionTLS12,
	}, nil
}

func serverHost(addr string) (string, error) {
	host, _, err := net.SplitHostPort(strings.TrimPrefix(addr, "dns:///"))
	if err != nil {
		return "", fmt.Errorf("server address %q: want HOST:PORT", addr)
	}
	return host, nil
}

func parseCert(pemBytes []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// fingerprint is the SHA-256 of a certificate as internal/pki writes it,
// "sha256:<hex>".
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeFile writes a file of the identity, 0600, whole or not at all.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil { // in case it existed with other bits
		return err
	}
	return os.Rename(tmp, path)
}
