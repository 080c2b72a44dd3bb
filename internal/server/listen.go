package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
)

// Timeouts of the REST/WebSocket API's connections. readTimeout bounds
// reading a request, headers and body; a WebSocket is not bound by it, as
// net/http clears a connection's deadlines when the handler takes it over.
const (
	readHeaderTimeout = 10 * time.Second
	// reservedFiles are the open files kept from the API's connections for
	// the rest of the server: database, NATS, agents' streams.
	reservedFiles = 1024
	readTimeout   = time.Minute
	idleTimeout   = 2 * time.Minute
)

// newHTTPServer returns the API's server: HTTP/1.1 (WebSocket upgrades
// need it), over TLS with cert's certificate when cert is not nil. Its
// connection errors (TLS handshakes, timeouts) are logged at debug level.
func newHTTPServer(h http.Handler, cert *certificate, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler: h, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, IdleTimeout: idleTimeout,
		Protocols: new(http.Protocols), ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	srv.Protocols.SetHTTP1(true)
	if cert != nil {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.get}
	}
	return srv
}

// listenHTTP listens on cfg.HTTPAddr, holding at most cfg.HTTPMaxConns
// connections (further clients wait to be accepted) and closing at once a
// client's connection beyond cfg.HTTPMaxConnsPerIP; 0 lifts either cap.
func listenHTTP(cfg Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPMaxConnsPerIP > 0 {
		ln = &perIPListener{Listener: ln, max: cfg.HTTPMaxConnsPerIP, open: map[string]int{}}
	}
	if cfg.HTTPMaxConns > 0 {
		ln = netutil.LimitListener(ln, cfg.HTTPMaxConns)
	}
	return ln, nil
}

// perIPListener closes, as soon as it is accepted, a connection from a
// client IP that already holds max open ones.
type perIPListener struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[string]int // open connections by client IP
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		l.mu.Lock()
		ok := l.open[ip] < l.max
		if ok {
			l.open[ip]++
		}
		l.mu.Unlock()
		if ok {
			return &ipConn{Conn: c, release: sync.OnceFunc(func() { l.release(ip) })}, nil
		}
		c.Close()
	}
}

func (l *perIPListener) release(ip string) {
	l.mu.Lock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
	l.mu.Unlock()
}

// ipConn is a connection counted by perIPListener until it is closed.
type ipConn struct {
	net.Conn
	release func()
}

func (c *ipConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// certificate is the API's TLS certificate, read from its files at start
// and again by reload, so that a renewed certificate is served without a
// restart. Its methods are safe for concurrent use.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	return c, c.reload()
}

// reload reads the files again; on error the certificate served stays.
func (c *certificate) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// apiCertificate is the API's certificate from --tls-cert and --tls-key,
// or nil (plain HTTP) when neither is given.
func apiCertificate(cfg Config) (*certificate, error) {
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey != "":
		return loadCertificate(cfg.TLSCert, cfg.TLSKey)
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	return nil, nil
}

// reloadOnHangup reloads cert on every SIGHUP until ctx is done.
func reloadOnHangup(ctx context.Context, cert *certificate, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := cert.reload(); err != nil {
					log.Error("SIGHUP: the API keeps its certificate", "err", err)
				} else {
					log.Info("SIGHUP: the API's certificate is reloaded", "tls_cert", cert.certFile)
				}
			}
		}
	}()
}

// beyondLoopback reports whether a listener on addr can be reached from
// other machines.
func beyondLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// raiseFileLimit raises the soft limit of open files to the hard one (Go's
// runtime already does on Linux; this makes sure) and returns it, so that
// the connection caps refuse clients before the limit does.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
