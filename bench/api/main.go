// Command api measures the control plane's REST API and its idle footprint:
//
//	go run ./bench/api [-n 2000]
//
// Latency: it runs the server in this process (server.Run: SQLite in a
// temporary data directory, the in-process NATS, no agents, so that runs
// stay queued and only the API and what a trigger writes are measured),
// creates a pipeline and times -n sequential calls of each kind over one
// keep-alive connection: GET /health (the baseline: routing, middleware and
// the loopback round trip, no store), POST /api/v1/pipelines/{id}/runs and
// GET /api/v1/runs/{id}. The calls go in rounds (health, triggers, gets) so
// that the machine's noise spreads over all three. It prints p50, p99 and
// mean for each and their ratios to the baseline. Requests are logged at the
// default level (info) into io.Discard: the log's formatting is counted,
// the terminal is not.
//
// Memory: it builds ./cmd/oxide-server, starts it with its defaults (its
// own agent is a child process, not counted) on a temporary data
// directory, waits for /health, lets it idle for 2 s and reads VmRSS and
// VmHWM from /proc/PID/status; then it sends SIGTERM and checks that the
// server exits 0.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/oxide-ci/oxide/internal/server"
	"github.com/oxide-ci/oxide/internal/server/api"
)

const rounds = 4

func main() {
	n := flag.Int("n", 2000, "calls of each kind")
	flag.Parse()
	if *n < rounds {
		fail(fmt.Errorf("-n must be at least %d", rounds))
	}
	if err := latency(*n); err != nil {
		fail(err)
	}
	fmt.Println()
	if err := idleMemory(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/api:", err)
	os.Exit(1)
}

// client calls one server with one token, over keep-alive connections.
type client struct {
	base, token string
	http        *http.Client
}

// do calls the server and fails unless it answers want; it decodes the
// answer into v if v is not nil.
func (c *client) do(method, path string, body any, want int, v any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if v != nil {
		return json.Unmarshal(b, v)
	}
	return nil
}

const pipelineYAML = `version: "1"
name: bench
stages:
  - name: build
    steps:
      - name: compile
        run: echo building
  - name: test
    depends_on: [build]
    steps:
      - name: unit
        run: echo testing
`

func latency(n int) error {
	dir, err := os.MkdirTemp("", "oxide-bench-api-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	token := api.NewToken()
	os.Setenv("OXIDE_ADMIN_TOKEN", token)

	var cfg server.Config
	cfg.Flags(pflag.NewFlagSet("bench", pflag.ContinueOnError)) // the defaults
	cfg.DataDir, cfg.HTTPAddr, cfg.GRPCAddr, cfg.Agents = dir, "127.0.0.1:0", "", 0
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, log, func(addr string) { ready <- addr }) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		return fmt.Errorf("server: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		return errors.New("server not ready after 30s")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "bench/api: server:", err)
		}
	}()

	c := &client{base: "http://" + addr, token: token, http: &http.Client{Timeout: 10 * time.Second}}
	var p struct{ ID string }
	if err := c.do("POST", "/api/v1/pipelines", map[string]string{"name": "bench", "definition": pipelineYAML}, 201, &p); err != nil {
		return err
	}
	health := func() error { return c.do("GET", "/health", nil, 200, nil) }
	var runIDs []string
	trigger := func() error {
		var r struct{ ID string }
		err := c.do("POST", "/api/v1/pipelines/"+p.ID+"/runs", map[string]any{"branch": "main", "variables": map[string]string{"K": "v"}}, 201, &r)
		runIDs = append(runIDs, r.ID)
		return err
	}
	get := func(i int) func() error {
		return func() error { return c.do("GET", "/api/v1/runs/"+runIDs[i], nil, 200, nil) }
	}

	// Warm up each path (connections, statement caches, the page cache);
	// these runs are fetched, not counted.
	for range 50 {
		if err := errors.Join(health(), trigger()); err != nil {
			return err
		}
	}
	warm := len(runIDs)
	for i := range warm {
		if err := get(i)(); err != nil {
			return err
		}
	}

	var hs, ts, gs []time.Duration
	began := time.Now()
	for r := range rounds {
		k := n / rounds
		if r == rounds-1 {
			k = n - (rounds-1)*(n/rounds)
		}
		first := len(runIDs)
		for range k {
			if err := timed(&hs, health); err != nil {
				return err
			}
		}
		for range k {
			if err := timed(&ts, trigger); err != nil {
				return err
			}
		}
		for i := range k {
			if err := timed(&gs, get(first+i)); err != nil {
				return err
			}
		}
	}
	took := time.Since(began)

	fmt.Printf("REST API, in-process server (SQLite, embedded NATS, 0 agents), %d sequential calls of each kind, keep-alive, %d rounds, %s\n",
		n, rounds, took.Round(time.Millisecond))
	fmt.Printf("%-30s %10s %10s %10s %12s %12s\n", "call", "p50", "p99", "mean", "p50/health", "mean/health")
	base := summarize(hs)
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"GET /health (baseline)", hs},
		{"POST /pipelines/{id}/runs", ts},
		{"GET /runs/{id}", gs},
	} {
		s := summarize(row.d)
		fmt.Printf("%-30s %10s %10s %10s %11.1fx %11.1fx\n", row.name, us(s.p50), us(s.p99), us(s.mean),
			float64(s.p50)/float64(base.p50), float64(s.mean)/float64(base.mean))
	}
	// Triggers number runs per pipeline: their cost should not grow with
	// the pipeline's run count.
	tenth := max(len(ts)/10, 1)
	early, late := summarize(ts[:tenth]), summarize(ts[len(ts)-tenth:])
	fmt.Printf("trigger p50, first tenth %s, last tenth %s (%.2fx), %d runs in the pipeline at the end\n",
		us(early.p50), us(late.p50), float64(late.p50)/float64(early.p50), len(runIDs))
	return nil
}

func timed(into *[]time.Duration, f func() error) error {
	t := time.Now()
	err := f()
	*into = append(*into, time.Since(t))
	return err
}

type summary struct{ p50, p99, mean time.Duration }

func summarize(d []time.Duration) summary {
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	at := func(q float64) time.Duration { return s[min(int(q*float64(len(s))), len(s)-1)] }
	return summary{p50: at(0.50), p99: at(0.99), mean: sum / time.Duration(len(s))}
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

// idleMemory builds oxide-server, runs it with its defaults and reports its
// resident memory at rest.
func idleMemory() error {
	dir, err := os.MkdirTemp("", "oxide-bench-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "oxide-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/oxide-ci/oxide/cmd/oxide-server")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/oxide-server: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--http-addr", addr, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "OXIDE_ADMIN_TOKEN="+api.NewToken())
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() { cmd.Process.Kill(); <-exited }

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("oxide-server exited before answering (%v):\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("oxide-server did not answer /health within 30s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	up := time.Since(started)
	time.Sleep(2 * time.Second)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		stop()
		return err
	}
	rss, hwm := procKB(status, "VmRSS"), procKB(status, "VmHWM")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		stop()
		return err
	}
	termAt := time.Now()
	var exitErr error
	select {
	case exitErr = <-exited:
	case <-time.After(30 * time.Second):
		stop()
		return fmt.Errorf("oxide-server still runs 30s after SIGTERM:\n%s", stderr.String())
	}
	stopped := time.Since(termAt)

	fmt.Printf("oxide-server idle (defaults: SQLite, embedded NATS, its own agent), answering /health after %s\n", up.Round(time.Millisecond))
	fmt.Printf("VmRSS %.1f MiB, VmHWM %.1f MiB (2s after the first /health)\n", float64(rss)/1024, float64(hwm)/1024)
	if exitErr != nil {
		return fmt.Errorf("oxide-server after SIGTERM: %v, want exit 0:\n%s", exitErr, stderr.String())
	}
	fmt.Printf("SIGTERM: exit 0 after %s\n", stopped.Round(time.Millisecond))
	if s := strings.TrimSpace(stderr.String()); s != "" {
		fmt.Printf("its stderr:\n%s\n", s)
	}
	return nil
}

// procKB returns the value in kB of a /proc/PID/status field, 0 if absent.
func procKB(status []byte, field string) int {
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb
		}
	}
	return 0
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
