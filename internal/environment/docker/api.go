package docker

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The package speaks the Engine API with net/http and the few wire types
// below, not through github.com/moby/moby/client: the oxide CLI links this
// package, and every oxide invocation would run the package inits of the
// client's dependencies (distribution/reference's regexps, go-digest,
// OpenTelemetry), half a megabyte of allocations before main.

// maxAPIVersion is the newest Engine API version the package asks for;
// an older engine is spoken to at its own version.
const maxAPIVersion = "1.52"

// api is a client of one engine.
type api struct {
	http    *http.Client
	base    string // scheme://host, without the version
	version string // "1.47"
}

// apiError is an answer of the engine with an error status.
type apiError struct {
	status  int
	message string
}

func (e *apiError) Error() string { return "Error response from daemon: " + e.message }

// notFound reports whether the engine answered 404.
func notFound(err error) bool { return status(err) == http.StatusNotFound }

// conflict reports whether the engine answered 409.
func conflict(err error) bool { return status(err) == http.StatusConflict }

func status(err error) int {
	var e *apiError
	if errors.As(err, &e) {
		return e.status
	}
	return 0
}

// dialEngine returns a client of the engine that DOCKER_HOST names (the
// default socket when unset), over TLS with DOCKER_CERT_PATH's certificates
// when it is set (verified when DOCKER_TLS_VERIFY is), at DOCKER_API_VERSION or
// else the newest version both sides speak.
func dialEngine(ctx context.Context) (*api, error) {
	host := cmp.Or(os.Getenv("DOCKER_HOST"), "unix:///var/run/docker.sock")
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("DOCKER_HOST %q: %w", host, err)
	}
	t := &http.Transport{DisableCompression: true}
	a := &api{http: &http.Client{Transport: t}}
	switch u.Scheme {
	case "unix":
		path := u.Path
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		a.base = "http://docker"
	case "tcp":
		t.Proxy = http.ProxyFromEnvironment
		a.base = "http://" + u.Host
		if dir := os.Getenv("DOCKER_CERT_PATH"); dir != "" {
			if t.TLSClientConfig, err = tlsConfig(dir, os.Getenv("DOCKER_TLS_VERIFY") == ""); err != nil {
				return nil, err
			}
			a.base = "https://" + u.Host
		}
	default:
		return nil, fmt.Errorf("DOCKER_HOST %q: want unix:// or tcp://", host)
	}
	if a.version = os.Getenv("DOCKER_API_VERSION"); a.version != "" {
		return a, nil
	}
	resp, err := a.do(ctx, http.MethodGet, "/_ping", nil, nil, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	a.version = maxAPIVersion
	if v := resp.Header.Get("Api-Version"); v != "" && olderVersion(v, maxAPIVersion) {
		a.version = v
	}
	return a, nil
}

// tlsConfig loads dir's ca.pem, cert.pem and key.pem, those that exist.
func tlsConfig(dir string, insecure bool) (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	if ca, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err == nil {
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("docker: no certificate in %s", filepath.Join(dir, "ca.pem"))
		}
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(cert); err == nil {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("docker: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// olderVersion reports whether API version a ("1.47") is older than b.
func olderVersion(a, b string) bool {
	am, an, _ := strings.Cut(a, ".")
	bm, bn, _ := strings.Cut(b, ".")
	ai, _ := strconv.Atoi(am)
	bi, _ := strconv.Atoi(bm)
	if ai != bi {
		return ai < bi
	}
	ain, _ := strconv.Atoi(an)
	bin, _ := strconv.Atoi(bn)
	return ain < bin
}

// do sends a request (body, when not nil, as JSON) and returns the
// response of a success status; the caller closes its body. An error
// status is an *apiError.
func (a *api) do(ctx context.Context, method, path string, query url.Values, body any, header http.Header) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	u := a.base + path
	if a.version != "" {
		u = a.base + "/v" + a.version + path
	}
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the Docker daemon: %w", err)
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct{ Message string }
	if json.Unmarshal(b, &m) != nil || m.Message == "" {
		m.Message = strings.TrimSpace(string(b))
	}
	return nil, &apiError{status: resp.StatusCode, message: m.Message}
}

// call is do for an answer decoded from JSON into out (unless nil).
func (a *api) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := a.do(ctx, method, path, query, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// hijack sends a request that the engine answers by switching the
// connection to a raw stream, and returns the stream.
func (a *api) hijack(ctx context.Context, path string, query url.Values, body any) (io.ReadWriteCloser, error) {
	h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"tcp"}}
	resp, err := a.do(ctx, http.MethodPost, path, query, body, h)
	if err != nil {
		return nil, err
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		return nil, fmt.Errorf("docker: %s: the engine answered %s, not a stream", path, resp.Status)
	}
	return rw, nil
}

// labelFilter is the filters parameter that selects objects with label.
func labelFilter(label string) string {
	f, _ := json.Marshal(map[string]map[string]bool{"label": {label: true}})
	return string(f)
}

// registryAuth is the X-Registry-Auth header's value.
func registryAuth(username, password, server string) string {
	b, _ := json.Marshal(map[string]string{"username": username, "password": password, "serveraddress": server})
	return base64.URLEncoding.EncodeToString(b)
}

// pullQuery is the /images/create query of an image reference: the name,
// and the tag or digest ("latest" when it has neither).
func pullQuery(ref string) url.Values {
	name, digest, digested := strings.Cut(ref, "@")
	tag := "latest"
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, tag = name[:i], name[i+1:]
	}
	if digested {
		tag = digest
	}
	return url.Values{"fromImage": {name}, "tag": {tag}}
}

// pullResult reads the progress of a pull to its end and returns the
// error it reports, if any.
func pullResult(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string
			ErrorDetail *struct{ Message string }
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}

// The wire types of the calls the package makes (a subset of the Engine
// API's fields).
type (
	containerConfig struct {
		Image       string
		User        string            `json:",omitempty"`
		WorkingDir  string            `json:",omitempty"`
		Labels      map[string]string `json:",omitempty"`
		Entrypoint  []string          `json:",omitempty"`
		Cmd         []string          `json:",omitempty"`
		OpenStdin   bool
		StdinOnce   bool
		AttachStdin bool
		HostConfig  *hostConfig
	}
	hostConfig struct {
		Init           *bool           `json:",omitempty"`
		Privileged     bool            `json:",omitempty"`
		CapAdd         []string        `json:",omitempty"`
		NetworkMode    string          `json:",omitempty"`
		NanoCPUs       int64           `json:"NanoCpus,omitempty"`
		Memory         int64           `json:",omitempty"`
		DeviceRequests []deviceRequest `json:",omitempty"`
		Mounts         []mount         `json:",omitempty"`
	}
	deviceRequest struct {
		Count        int
		Capabilities [][]string
	}
	mount struct {
		Type     string
		Source   string `json:",omitempty"`
		Target   string
		ReadOnly bool `json:",omitempty"`
	}
	execConfig struct {
		User         string   `json:",omitempty"`
		Env          []string `json:",omitempty"`
		WorkingDir   string   `json:",omitempty"`
		Cmd          []string
		AttachStdout bool `json:",omitempty"`
		AttachStderr bool `json:",omitempty"`
	}
	execStart struct{ Detach, Tty bool }
	// labelled is a container or volume of a list.
	labelled struct {
		ID, Name string
		Labels   map[string]string
	}
	idResponse struct{ ID string }
)

// Mount types.
const (
	mountBind   = "bind"
	mountVolume = "volume"
	mountTmpfs  = "tmpfs"
)
