package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/pki"
)

func TestLoadOrCreateCA(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Key == nil {
		t.Fatalf("CA %+v", ca.Cert)
	}
	if k, ok := ca.Cert.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key %T, want ECDSA P-256", ca.Cert.PublicKey)
	}
	fi, err := os.Stat(filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", pki.CAKeyFile, fi.Mode().Perm())
	}

	// The second start loads the same CA.
	again, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(ca.Cert) || again.Key == nil || again.Fingerprint() != ca.Fingerprint() {
		t.Error("the second start made another CA")
	}
	if !strings.HasPrefix(ca.Fingerprint(), "sha256:") || len(ca.Fingerprint()) != 7+64 {
		t.Errorf("fingerprint %q", ca.Fingerprint())
	}

	// A certificate without its key is not replaced.
	if err := os.Remove(filepath.Join(dir, pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateCA(dir); err == nil {
		t.Error("loaded a CA whose key is missing")
	}
}

func TestLoadCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.MarshalKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, parts ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, slices.Concat(parts...), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certOnly := write("cert-only.pem", ca.CertPEM)
	bundle := write("bundle.pem", ca.CertPEM, keyPEM)
	other, _ := pki.NewCA("other")
	otherKey, _ := pki.MarshalKey(other.Key)
	wrongKey := write("wrong-key.pem", otherKey)

	// The key beside the certificate, in the same file, or none.
	c, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil || c.Key == nil {
		t.Fatalf("LoadCA(cert, key) = %v, %v", c, err)
	}
	if c, err = pki.LoadCA(bundle, ""); err != nil || c.Key == nil {
		t.Fatalf("LoadCA(bundle) = %v, %v", c, err)
	}
	c, err = pki.LoadCA(certOnly, "")
	if err != nil || c.Key != nil {
		t.Fatalf("LoadCA(cert only) = %v, %v", c, err)
	}
	if _, err := c.IssueServerCert([]string{"localhost"}); !errors.Is(err, pki.ErrNoKey) {
		t.Errorf("IssueServerCert without a key: %v", err)
	}
	if _, err := pki.LoadCA(certOnly, wrongKey); err == nil {
		t.Error("loaded a CA with another CA's key")
	}
	if _, err := pki.LoadCA(certOnly, certOnly); err == nil {
		t.Error("loaded a CA from a key file without a key")
	}
}

// TestServerCertAndAgents runs a real TLS handshake on loopback: the
// agent verifies the server with the CA, the server verifies the agent's
// certificate with VerifyAgent.
func TestServerCertAndAgents(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServerCert([]string{"127.0.0.1", "localhost", "build.example.com", "[::1]", "", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := srvCert.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"localhost", "build.example.com"}) || len(leaf.IPAddresses) != 2 ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server certificate: DNS %v, IPs %v, usage %v", leaf.DNSNames, leaf.IPAddresses, leaf.ExtKeyUsage)
	}

	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "i-am-root") // the name asked for is ignored
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignCSR(csr, "agent-42")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	ac := certs[0]
	if ac.Subject.CommonName != "agent-42" || len(ac.URIs) != 1 || ac.URIs[0].String() != "urn:oxide:agent:agent-42" ||
		!slices.Equal(ac.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || ac.IsCA {
		t.Errorf("agent certificate: CN %q, URIs %v, usage %v", ac.Subject.CommonName, ac.URIs, ac.ExtKeyUsage)
	}
	if d := ac.NotAfter.Sub(time.Now()); d < pki.AgentValidity-time.Hour || d > pki.AgentValidity {
		t.Errorf("agent certificate valid for %s more, want a year", d)
	}
	if id, err := ca.VerifyAgent(certs); err != nil || id != "agent-42" {
		t.Errorf("VerifyAgent = %q, %v", id, err)
	}
	keyPEM, _ := pki.MarshalKey(key)
	clientCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS(srvCert))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				got <- err.Error()
			} else if id, err := ca.VerifyAgent(tc.ConnectionState().PeerCertificates); err != nil {
				got <- err.Error()
			} else {
				got <- "agent " + id
			}
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), pki.ClientTLS(ca.Pool(), &clientCert, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "agent agent-42" {
		t.Errorf("server saw %s", s)
	}
	c.Close()

	// A client that does not trust the CA refuses the server.
	if c, err := tls.Dial("tcp", ln.Addr().String(), pki.ClientTLS(x509.NewCertPool(), nil, "localhost")); err == nil {
		c.Close()
		t.Error("a client without the CA accepted the server")
	}
	<-got
}

func TestVerifyAgentRejects(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewCA("ours")
	other, _ := pki.NewCA("theirs")
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "x")
	sign := func(ca *pki.CA, id string) []*x509.Certificate {
		t.Helper()
		p, err := ca.SignCSR(csr, id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := pki.ParseCerts(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := ca.VerifyAgent(nil); !errors.Is(err, pki.ErrNoCertificate) {
		t.Errorf("no certificate: %v", err)
	}
	if _, err := ca.VerifyAgent(sign(other, "a1")); !errors.Is(err, pki.ErrUntrusted) {
		t.Errorf("another CA's certificate: %v", err)
	}
	// A server certificate of our CA is not an agent's.
	sc, _ := ca.IssueServerCert([]string{"localhost"})
	if _, err := ca.VerifyAgent([]*x509.Certificate{sc.Leaf}); !errors.Is(err, pki.ErrUntrusted) {
		t.Errorf("a server certificate: %v", err)
	}
	// The CA certificate itself is no agent either.
	if _, err := ca.VerifyAgent([]*x509.Certificate{ca.Cert}); !errors.Is(err, pki.ErrUntrusted) {
		t.Errorf("the CA's certificate: %v", err)
	}
}

func TestSignCSRRejects(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewCA("ours")
	key, _ := pki.NewKey()
	good, _ := pki.NewCSR(key, "x")
	tampered := []byte(strings.Replace(string(good), string(good[80:84]), "AAAA", 1))
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak, _ := pki.NewCSR(small, "x")
	tests := map[string][]byte{
		"empty":      nil,
		"not PEM":    []byte("hello"),
		"a key":      mustKeyPEM(t),
		"tampered":   tampered,
		"small RSA":  weak,
		"truncated":  good[:len(good)/2],
		"cert block": ca.CertPEM,
	}
	for name, csr := range tests {
		if _, err := ca.SignCSR(csr, "a1"); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := ca.SignCSR(good, ""); err == nil {
		t.Error("signed for no agent")
	}
}

func mustKeyPEM(t *testing.T) []byte {
	k, _ := pki.NewKey()
	p, err := pki.MarshalKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	a, ha := pki.NewBootstrapToken()
	b, hb := pki.NewBootstrapToken()
	if a == b || ha == hb || !strings.HasPrefix(a, "oxb_") || len(a) != 4+43 {
		t.Errorf("tokens %q, %q", a, b)
	}
	if pki.HashToken(a) != ha || len(ha) != 64 || strings.Contains(ha, a[4:]) {
		t.Errorf("hash %q of %q", ha, a)
	}
}

func TestLabels(t *testing.T) {
	t.Parallel()
	for _, ok := range [][]string{nil, {"linux"}, {"gpu=a100", "os:linux", "x86_64", "café"}} {
		if err := pki.CheckLabels(ok); err != nil {
			t.Errorf("CheckLabels(%q) = %v", ok, err)
		}
	}
	for _, bad := range [][]string{{""}, {"a b"}, {"a,b"}, {"tab\t"}, {strings.Repeat("x", 65)}, make([]string, 33)} {
		if err := pki.CheckLabels(bad); err == nil {
			t.Errorf("CheckLabels(%q) accepted", bad)
		}
	}
	if got := pki.MergeLabels([]string{"linux", "docker", "linux"}, []string{"gpu", "docker"}); !slices.Equal(got, []string{"linux", "docker", "gpu"}) {
		t.Errorf("MergeLabels = %q", got)
	}
	for _, ttl := range []time.Duration{pki.MinTokenTTL, 10 * time.Minute, pki.MaxTokenTTL} {
		if err := pki.CheckTokenTTL(ttl); err != nil {
			t.Errorf("CheckTokenTTL(%s) = %v", ttl, err)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Minute, time.Second, pki.MaxTokenTTL + time.Second} {
		if err := pki.CheckTokenTTL(ttl); err == nil {
			t.Errorf("CheckTokenTTL(%s) accepted", ttl)
		}
	}
}
