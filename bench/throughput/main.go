// Command throughput measures the control plane at scale:
//
//	go run ./bench/throughput [-n 5000] [-agents 4] [-concurrency 4] [-sim 1000] [-cpuprofile FILE]
//
// Job throughput: no-op jobs (`true`, on the host) go server → agents →
// completion. The server runs in this process (server.Run, no agent of
// its own) on PostgreSQL when OXIDE_TEST_POSTGRES is set (a fresh schema,
// dropped at the end; scripts/postgres.sh starts a server) and otherwise on
// SQLite in a temporary data directory; -agents real oxide-agent processes,
// built from ./cmd/oxide-agent, register with bootstrap tokens from the
// REST API and connect over mTLS, each with -concurrency slots. Jobs are
// submitted through POST /api/v1/jobs by 8 concurrent clients, and the
// store's count of succeeded jobs marks completion. Two figures:
//
//   - queue drain: -n jobs are queued while no agent runs, then the
//     (registered) agents start, and the time until all have succeeded
//     gives the rate of dispatch and execution alone;
//   - end to end: -n more jobs are submitted while the agents run, timed
//     from the first submit to the last job succeeded: the issue's
//     "server → 4 agents → completion", with the API's submission in it.
//
// Both are printed with their ratios to the target, 2,000 jobs/s. The
// baseline, in the same run on a fresh database of the same kind, is the
// server's own agent with 4 slots (--agents 4: one child process, as the
// server's user) and no other agent (its queue drain starts with the
// server's restart): the difference is the cost of four processes against
// one. The own agent's CPU is counted with neither figure. CPU time per
// job is printed too: this process's (the server and the API clients), and
// the agents' with their job processes (/proc/PID/stat).
//
// Server memory with agents: ./cmd/oxide-server, built and run as its own
// process (SQLite, --agents 0) so that its VmRSS is its alone.
// After it idles for 3 s its VmRSS is read; then this process registers
// -sim simulated agents (a bootstrap token each from the REST API, a key
// and CSR each, Register over gRPC), reads VmRSS again, opens one Connect
// stream per agent over its own mTLS connection with the agent's client
// certificate, says Hello and sends a heartbeat every 10 s (the agent's
// default), spread over the interval, from one goroutine for all. Once
// every agent is online and 12 s have passed (every agent has sent a
// heartbeat since) it reads VmRSS and VmHWM and prints them against the
// idle figure, with the cost per connected agent.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/agent"
	"github.com/oxide-ci/oxide/internal/agent/agentcmd"
	"github.com/oxide-ci/oxide/internal/server"
	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/postgres"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// Targets of the issue.
const (
	targetJobsPerSec = 2000
	submitters       = 8
	baselineWorkers  = 4
)

func main() {
	agentcmd.RunIfChild("bench") // the own agent of the baseline's server
	n := flag.Int("n", 5000, "no-op jobs in each throughput run")
	agents := flag.Int("agents", 4, "oxide-agent processes")
	concurrency := flag.Int("concurrency", 4, "slots of each oxide-agent")
	sim := flag.Int("sim", 1000, "simulated agents connected for the memory figure (0: skip)")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile (the server's, the API clients') to `FILE`")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/throughput:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*n, *agents, *concurrency, *sim); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/throughput:", err)
		os.Exit(1)
	}
}

func run(n, agents, concurrency, sim int) error {
	began := time.Now()
	dir, err := os.MkdirTemp("", "oxide-bench-throughput-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	agentBin, serverBin := filepath.Join(dir, "oxide-agent"), filepath.Join(dir, "oxide-server")
	if err := goBuild(agentBin, "github.com/oxide-ci/oxide/cmd/oxide-agent"); err != nil {
		return err
	}
	if sim > 0 {
		if err := goBuild(serverBin, "github.com/oxide-ci/oxide/cmd/oxide-server"); err != nil {
			return err
		}
	}
	admin := api.NewToken()
	os.Setenv("OXIDE_ADMIN_TOKEN", admin) // server.Run and oxide-server read it

	kind := "SQLite"
	if os.Getenv("OXIDE_TEST_POSTGRES") != "" {
		kind = "PostgreSQL"
	}
	fmt.Printf("job throughput: %d no-op jobs (true, on the host), POST /api/v1/jobs by %d clients (%s)\n\n", n, submitters, kind)
	remote, err := throughput(filepath.Join(dir, "remote"), admin, n, setup{agentBin: agentBin, agents: agents, concurrency: concurrency})
	if err != nil {
		return fmt.Errorf("agents: %w", err)
	}
	local, err := throughput(filepath.Join(dir, "local"), admin, n, setup{workers: baselineWorkers})
	if err != nil {
		return fmt.Errorf("the server's own agent: %w", err)
	}
	fmt.Printf("%-44s  %-18s  %s\n", "", "queue drain", "end to end (submitted while running)")
	fmt.Printf("%-44s  %7s %10s  %7s %8s %7s %10s\n", "", "jobs/s", "ratio", "submit", "complete", "jobs/s", "ratio")
	row := func(name string, r, base result) {
		fmt.Printf("%-44s  %7.0f %10.2f  %7s %8s %7.0f %10.2f\n", name,
			r.drainRate(n), r.drainRate(n)/base.drainRate(n), secs(r.submitted), secs(r.took), r.rate(n), r.rate(n)/base.rate(n))
	}
	row(fmt.Sprintf("the server's own agent × %d slots (baseline)", baselineWorkers), local, local)
	row(fmt.Sprintf("%d oxide-agent processes × %d slots (gRPC/mTLS)", agents, concurrency), remote, local)
	fmt.Println()
	fmt.Printf("target ≥ %d jobs/s, server → %d agents → completion: %s; end to end %.0f jobs/s (%.2f of the target), queue drain %.0f jobs/s (%.2f)\n",
		targetJobsPerSec, agents, verdict(remote.rate(n) >= targetJobsPerSec), remote.rate(n), remote.rate(n)/targetJobsPerSec,
		remote.drainRate(n), remote.drainRate(n)/targetJobsPerSec)
	fmt.Printf("submission alone (POST /api/v1/jobs, %d clients): %.0f jobs/s with agents running, %.0f with the server's own agent\n",
		submitters, float64(n)/remote.submitted.Seconds(), float64(n)/local.submitted.Seconds())
	perJob := func(d time.Duration) string {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)/float64(n))
	}
	fmt.Printf("CPU per job, end to end (%d cores): own agent: this process (server, API clients) %s, the agent process with its job processes %s;\n",
		runtime.NumCPU(), perJob(local.cpu.self), perJob(local.cpu.agents))
	fmt.Printf("  agents: this process (server, API clients) %s, agent processes with their job processes %s\n",
		perJob(remote.cpu.self), perJob(remote.cpu.agents))

	if sim > 0 {
		fmt.Println()
		if err := agentMemory(filepath.Join(dir, "memory"), serverBin, admin, sim); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	fmt.Printf("\n(bench took %s)\n", time.Since(began).Round(time.Second))
	return nil
}

// setup is what runs the jobs: oxide-agent processes, or the server's own
// workers.
type setup struct {
	agentBin    string
	agents      int
	concurrency int
	workers     int
}

// result is what a throughput run measured.
type result struct {
	drain     time.Duration // n jobs queued, the workers start → the last succeeded
	submitted time.Duration // end to end: first submit → last submit answered
	took      time.Duration // end to end: first submit → last job succeeded
	cpu       cpuUse        // end to end
}

func (r result) rate(n int) float64      { return float64(n) / r.took.Seconds() }
func (r result) drainRate(n int) float64 { return float64(n) / r.drain.Seconds() }

// throughput runs a server on a fresh database and measures two things.
// Queue drain: n jobs are queued while nothing can take them, then the
// workers start (oxide-agent processes, registered before; or the server
// starts again with its own agent) and run them all. End to end: n
// more jobs are submitted while the workers run, timed from the first
// submit to the last job succeeded.
func throughput(dir, admin string, n int, s setup) (res result, err error) {
	ctx := context.Background()
	cfg := server.Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", GRPCAddr: freeAddr(), HostOnly: true,
		AgentTimeout: 30 * time.Second, Lease: 30 * time.Second,
	}
	if dsn := os.Getenv("OXIDE_TEST_POSTGRES"); dsn != "" {
		schemaDSN, drop, err := freshSchema(ctx, dsn)
		if err != nil {
			return res, err
		}
		defer drop()
		cfg.DatabaseURL = schemaDSN
	}
	srv, err := startServer(cfg)
	if err != nil {
		return res, err
	}
	defer func() {
		if srv != nil {
			srv.stop()
		}
	}()
	st, err := openStore(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer st.Close()
	c := newClient(srv.url, admin, submitters)

	// The agents register, and stop until jobs are queued.
	dataDirs := make([]string, s.agents)
	for i := range dataDirs {
		var tok struct{ Token string }
		if err := c.do("POST", "/api/v1/agents/tokens", map[string]any{"ttl": "10m"}, 201, &tok); err != nil {
			return res, err
		}
		dataDirs[i] = filepath.Join(dir, fmt.Sprintf("agent-%d", i+1))
		p, err := startAgent(s.agentBin, cfg.GRPCAddr, tok.Token, dataDirs[i], s.concurrency)
		if err == nil {
			err = p.waitOnline(st)
		}
		if err != nil {
			return res, err
		}
		p.stop()
	}
	spec := map[string]any{"name": "noop", "command": "true"}
	submit := func() error {
		return parallel(n, submitters, func(int) error { return c.do("POST", "/api/v1/jobs", spec, 201, nil) })
	}
	if err := submit(); err != nil {
		return res, err
	}

	start := time.Now()
	if s.workers > 0 {
		srv.stop()
		cfg.Agents = s.workers
		if srv, err = startServer(cfg); err != nil {
			return res, err
		}
		c = newClient(srv.url, admin, submitters)
	}
	var pids []int // of the agent processes, the server's own included
	if s.workers > 0 {
		pid, err := ownAgentPID(ctx, st)
		if err != nil {
			return res, err
		}
		pids = append(pids, pid)
	}
	var procs []*agentProcess
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, d := range dataDirs {
		p, err := startAgent(s.agentBin, cfg.GRPCAddr, "", d, s.concurrency)
		if err != nil {
			return res, err
		}
		procs = append(procs, p)
		pids = append(pids, p.cmd.Process.Pid)
	}
	if err := waitSucceeded(ctx, st, n, procs); err != nil {
		return res, err
	}
	res.drain = time.Since(start)

	before := cpuNow(pids)
	start = time.Now()
	if err := submit(); err != nil {
		return res, err
	}
	res.submitted = time.Since(start)
	if err := waitSucceeded(ctx, st, 2*n, procs); err != nil {
		return res, err
	}
	res.took = time.Since(start)
	res.cpu = cpuNow(pids).sub(before)
	return res, nil
}

// ownAgentPID waits for the server's own agent to be ready and returns its
// process ID, from the handle of its worker row ("pid N").
func ownAgentPID(ctx context.Context, st store.Store) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ws, err := st.Workers().List(ctx, "", store.WorkerReady)
		if err != nil {
			return 0, err
		}
		for _, w := range ws {
			var pid int
			if strings.HasPrefix(w.Provider, "server:") && w.Handle != "" {
				if _, err := fmt.Sscanf(w.Handle, "pid %d", &pid); err == nil {
					return pid, nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, errors.New("the server's own agent was not ready in 30s")
}

// waitSucceeded waits until the store counts n jobs succeeded.
func waitSucceeded(ctx context.Context, st store.Store, n int, procs []*agentProcess) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		done, err := st.Jobs().Count(ctx, store.JobSucceeded)
		if err != nil {
			return err
		}
		if done >= n {
			return nil
		}
		if failed, _ := st.Jobs().Count(ctx, store.JobFailed); failed > 0 {
			return fmt.Errorf("%d jobs failed", failed)
		}
		for _, p := range procs {
			select {
			case err := <-p.exited:
				p.exited <- err
				return fmt.Errorf("oxide-agent exited (%v):\n%s", err, p.stderr.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d jobs succeeded after 2 minutes", done, n)
		}
		// Counting scans the jobs: often only near the end, so that the
		// polling costs little of this process's CPU (it was 12% of the
		// server's figure at every 10 ms).
		if done < n*19/20 {
			time.Sleep(100 * time.Millisecond)
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// cpuUse is CPU time: of this process (the server, the API clients), and
// of the agent processes with their reaped children (their job processes).
type cpuUse struct{ self, agents time.Duration }

func cpuNow(pids []int) cpuUse {
	var self syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	u := cpuUse{self: rusageCPU(self)}
	for _, pid := range pids {
		u.agents += procCPU(pid)
	}
	return u
}

func (u cpuUse) sub(v cpuUse) cpuUse {
	return cpuUse{u.self - v.self, u.agents - v.agents}
}

func rusageCPU(r syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// procCPU returns the user and system time of a process and of its reaped
// children, from /proc/PID/stat (in clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, state
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, s := range f[11:15] { // utime, stime, cutime, cstime
		var v int64
		fmt.Sscanf(s, "%d", &v)
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// inProcess is server.Run in this process.
type inProcess struct {
	url    string
	cancel context.CancelFunc
	done   chan error
}

func startServer(cfg server.Config) (*inProcess, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProcess{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	go func() { s.done <- server.Run(ctx, cfg, log, func(addr string) { ready <- addr }) }()
	select {
	case addr := <-ready:
		s.url = "http://" + addr
		return s, nil
	case err := <-s.done:
		cancel()
		return nil, fmt.Errorf("server: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		return nil, errors.New("the server was not ready within 30s")
	}
}

func (s *inProcess) stop() {
	s.cancel()
	if err := <-s.done; err != nil {
		fmt.Fprintln(os.Stderr, "bench/throughput: server:", err)
	}
}

// openStore opens the server's database a second time, to count jobs.
func openStore(ctx context.Context, cfg server.Config) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		return postgres.Open(ctx, cfg.DatabaseURL)
	}
	return sqlite.Open(ctx, filepath.Join(cfg.DataDir, "oxide.db"))
}

// freshSchema makes an empty schema on the PostgreSQL server of dsn and
// returns the DSN that uses it, and a function that drops it.
func freshSchema(ctx context.Context, dsn string) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", nil, fmt.Errorf("OXIDE_TEST_POSTGRES: want a postgres:// URL, got %q", dsn)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "bench_" + hex.EncodeToString(b)
	exec := func(sql string) error {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}
	if err := exec(`CREATE SCHEMA ` + name); err != nil {
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	drop := func() {
		if err := exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			fmt.Fprintln(os.Stderr, "bench/throughput: drop schema:", err)
		}
	}
	return u.String(), drop, nil
}

// agentProcess is an oxide-agent process.
type agentProcess struct {
	cmd     *exec.Cmd
	dataDir string
	stderr  syncBuffer
	exited  chan error // receives Wait's error once; put it back after reading
}

// startAgent starts oxide-agent; token may be empty once it registered.
func startAgent(bin, grpcAddr, token, dataDir string, concurrency int) (*agentProcess, error) {
	p := &agentProcess{exited: make(chan error, 1), dataDir: dataDir}
	p.cmd = exec.Command(bin, "--server", grpcAddr, "--token", token, "--data-dir", dataDir, "--host-only",
		"--concurrency", fmt.Sprint(concurrency), "--log-level", "warn")
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// waitOnline waits until the store has the agent online.
func (p *agentProcess) waitOnline(st store.Store) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if id, err := agent.LoadIdentity(p.dataDir); err == nil {
			if a, err := st.Agents().Get(context.Background(), id.AgentID); err == nil && a.Status == store.AgentOnline {
				return nil
			}
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("oxide-agent exited (%v):\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return errors.New("oxide-agent was not online within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits, killing it after 15 s.
func (p *agentProcess) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		err = <-p.exited
	}
	p.exited <- err
}

// syncBuffer is a bytes.Buffer safe for a process's writes and our reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// client calls the REST API with a token, over keep-alive connections.
type client struct {
	base, token string
	http        *http.Client
}

func newClient(base, token string, conns int) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	return &client{base: base, token: token, http: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// do calls the API and fails unless it answers want; it decodes the answer
// into v if v is not nil.
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
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if v != nil {
		return json.Unmarshal(b, v)
	}
	return nil
}

// goBuild builds the package pkg into out.
func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

// mib converts kB to MiB.
func mib(kb int) float64 { return float64(kb) / 1024 }

// procMem returns VmRSS and VmHWM of a process, in kB.
func procMem(pid int) (rss, hwm int, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return procKB(status, "VmRSS"), procKB(status, "VmHWM"), nil
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

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
