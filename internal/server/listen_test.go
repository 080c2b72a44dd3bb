package server

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 11, item 3: clients that announce a body and send one byte get
// their 401 at once, and slow clients holding their share of connections
// from one address neither exhaust the server nor stop /health for
// another address (127.0.0.2: Linux routes all of 127/8 to loopback).
func TestSlowClientsDoNotStarveOthers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Agents = 0
	cfg.HTTPMaxConnsPerIP = 20
	s := startServer(t, cfg)
	addr := strings.TrimPrefix(s.URL, "http://")
	const clients = 200

	// Slow bodies: each is answered 401 (or closed, beyond the cap)
	// without waiting for its body.
	unauthorized := 0
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /api/v1/pipelines HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n{")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		var ne net.Error
		switch {
		case err == nil && resp.StatusCode == http.StatusUnauthorized:
			unauthorized++
		case err == nil:
			t.Fatalf("slow body: %s, want 401", resp.Status)
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("slow body: no answer before the body")
		}
		c.Close()
	}
	if unauthorized == 0 {
		t.Error("no slow body was answered 401")
	}

	// Slow headers: held until ReadHeaderTimeout, up to the cap; the
	// connections beyond it are closed at once.
	held := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		fmt.Fprintf(c, "POST /api/v1/pipelines HTTP/1.1\r\nHost: x\r\n")
	}
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
	}}
	resp, err := other.Get(s.URL + "/health")
	if err != nil {
		t.Fatalf("/health from 127.0.0.2: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health from 127.0.0.2: %s", resp.Status)
	}
	same := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	if resp, err := same.Get(s.URL + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("/health from 127.0.0.1 beyond its cap: %s, want the connection closed", resp.Status)
	}
	// The connections beyond the cap end long before the others' header
	// timeout.
	ended, deadline := make(chan bool, clients), time.Now().Add(readHeaderTimeout/2)
	for _, c := range held {
		go func() {
			c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			ended <- !errors.As(err, &ne) || !ne.Timeout()
		}()
	}
	closed := 0
	for range held {
		if <-ended {
			closed++
		}
	}
	if closed < clients-cfg.HTTPMaxConnsPerIP {
		t.Errorf("%d of %d connections were closed, want all beyond the cap of %d", closed, clients, cfg.HTTPMaxConnsPerIP)
	}
}

// Issue 11, item 11: --tls-cert and --tls-key serve the API over HTTPS,
// and SIGHUP reloads them. The signal goes to the test process itself:
// the server's signal.Notify catches it while the server runs.
func TestAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.Agents = 0
	cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := x509.NewCertPool()
	first := writeSelfSigned(t, cfg.TLSCert, cfg.TLSKey, "first", pool)
	s := startServer(t, cfg)
	url := strings.Replace(s.URL, "http://", "https://", 1) + "/health"

	served := func() *x509.Certificate {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
		return resp.TLS.PeerCertificates[0]
	}
	if got := served(); !got.Equal(first) {
		t.Fatalf("served %q, want %q", got.Subject.CommonName, first.Subject.CommonName)
	}
	if resp, err := http.Get(s.URL + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("/health answered over plain HTTP")
		}
	}

	second := writeSelfSigned(t, cfg.TLSCert, cfg.TLSKey, "second", pool)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got := served(); !got.Equal(second); got = served() {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP: served %q, want %q", got.Subject.CommonName, second.Subject.CommonName)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBeyondLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": false, "[::1]:8080": false, "localhost:8080": false, "127.0.0.2:0": false,
		":8080": true, "0.0.0.0:8080": true, "[::]:8080": true, "10.0.0.5:8080": true, "ci.example.com:443": true,
	} {
		if got := beyondLoopback(addr); got != want {
			t.Errorf("beyondLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// writeSelfSigned writes a new self-signed certificate for 127.0.0.1 and
// its key, adds it to pool and returns it.
func writeSelfSigned(t *testing.T, certFile, keyFile, name string, pool *x509.CertPool) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(cert)
	return cert
}
