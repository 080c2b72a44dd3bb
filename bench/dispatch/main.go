// Command dispatch measures how fast a queued job reaches an idle agent:
//
//	go run ./bench/dispatch [-n 1000]
//
// It runs, in this process, the scheduler on SQLite (a temporary data
// directory) and the agent service (internal/server/agentsvc) on a real
// TLS listener on loopback, and registers a fake agent the way a real one
// does (bootstrap token, CSR, client certificate), which holds one Connect
// stream over mTLS with one slot. Each of -n rounds submits a job
// (scheduler.SubmitJob) and times until the agent has received its RunJob;
// the agent then reports the result and waits for the Ack, so that it is
// idle again for the next round.
//
// The baseline, timed in the same rounds (alternately, so that the
// machine's noise spreads over both), is an in-process worker: a loop
// that waits on Queued and claims, as the server's own workers do. The
// difference is the cost of the protocol: the push, gRPC, TLS and the
// loopback round trip.
//
// It prints p50, p99 and the mean of both, the ratio to the baseline, and
// the agent's figures against the targets: p50 under 5 ms on loopback, and
// Buildkite's advertised "under a second" from queue to agent.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/server/agentsvc"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// Targets of the issue.
const (
	targetP50  = 5 * time.Millisecond
	buildkite  = time.Second
	settleTime = 2 * time.Millisecond // between rounds, untimed: the agent is idle again
)

func main() {
	n := flag.Int("n", 1000, "jobs of each kind")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dispatch:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "oxide-bench-dispatch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "oxide.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	svc := scheduler.New(scheduler.Config{Store: st})

	ca, err := pki.NewCA("bench CA")
	if err != nil {
		return err
	}
	cert, err := ca.IssueServerCert([]string{"127.0.0.1"})
	if err != nil {
		return err
	}
	srv, err := agentsvc.New(agentsvc.Config{Store: st, Control: svc, CA: ca, Certificate: cert})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	defer srv.Stop(ctx)

	ag, err := connect(ctx, srv, ca, ln.Addr().String())
	if err != nil {
		return err
	}
	defer ag.close()
	local := startLocal(ctx, svc)
	defer local.stop()

	// Warm up both paths (connections, statements, the graph caches).
	for range 20 {
		if _, err := ag.round(ctx, svc); err != nil {
			return err
		}
		if _, err := local.round(ctx, svc); err != nil {
			return err
		}
	}
	var remote, inproc []time.Duration
	for range n {
		d, err := local.round(ctx, svc)
		if err != nil {
			return err
		}
		inproc = append(inproc, d)
		time.Sleep(settleTime)
		if d, err = ag.round(ctx, svc); err != nil {
			return err
		}
		remote = append(remote, d)
		time.Sleep(settleTime)
	}

	b, r := summarize(inproc), summarize(remote)
	fmt.Printf("dispatch latency: SubmitJob → job received by an idle worker, %d jobs each (SQLite, loopback)\n\n", n)
	fmt.Printf("%-34s %9s %9s %9s  %s\n", "", "p50", "p99", "mean", "p50 ratio")
	fmt.Printf("%-34s %9s %9s %9s  %s\n", "in-process worker (Queued+Claim)", ms(b.p50), ms(b.p99), ms(b.mean), "1.00 (baseline)")
	fmt.Printf("%-34s %9s %9s %9s  %.2f\n", "agent over gRPC/mTLS (RunJob)", ms(r.p50), ms(r.p99), ms(r.mean), float64(r.p50)/float64(b.p50))
	fmt.Println()
	fmt.Printf("target p50 < %s on loopback: %s (p50 %s, %.0fx under)\n", targetP50, verdict(r.p50 < targetP50), ms(r.p50), float64(targetP50)/float64(r.p50))
	fmt.Printf("Buildkite advertises < %s:   %s (p99 %s, %.0fx under)\n", buildkite, verdict(r.p99 < buildkite), ms(r.p99), float64(buildkite)/float64(r.p99))
	return nil
}

// agent is the fake agent: a raw client of the protocol with one slot.
type agent struct {
	stream grpc.BidiStreamingClient[agentrpc.AgentMessage, agentrpc.ServerMessage]
	cc     *grpc.ClientConn
	seq    uint64
}

// connect registers an agent with a bootstrap token and opens its stream.
func connect(ctx context.Context, srv *agentsvc.Server, ca *pki.CA, addr string) (*agent, error) {
	tok, _, err := srv.CreateToken(ctx, 10*time.Minute, []string{"remote"}, "bench")
	if err != nil {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, "bench-agent")
	if err != nil {
		return nil, err
	}
	dial := func(cert *tls.Certificate) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(ca.Pool(), cert, "127.0.0.1"))))
	}
	cc, err := dial(nil)
	if err != nil {
		return nil, err
	}
	resp, err := agentrpc.NewAgentClient(cc).Register(ctx, &agentrpc.RegisterRequest{Token: tok, Name: "bench-agent", Csr: csr, Capacity: 1})
	cc.Close()
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(resp.Certificate, keyPEM)
	if err != nil {
		return nil, err
	}
	if cc, err = dial(&cert); err != nil {
		return nil, err
	}
	st, err := agentrpc.NewAgentClient(cc).Connect(ctx)
	if err != nil {
		cc.Close()
		return nil, err
	}
	a := &agent{stream: st, cc: cc}
	if err := st.Send(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Hello{Hello: &agentrpc.Hello{Version: "bench", Capacity: 1}}}); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *agent) close() {
	a.stream.CloseSend()
	a.cc.Close()
}

// round submits a job, times it to its RunJob, and reports its result.
func (a *agent) round(ctx context.Context, svc *scheduler.Service) (time.Duration, error) {
	start := time.Now()
	j, err := svc.SubmitJob(ctx, jobspec.Spec{Name: "bench", Command: "true", Labels: []string{"remote"}}, "bench")
	if err != nil {
		return 0, err
	}
	var run *agentrpc.RunJob
	for run == nil {
		m, err := a.stream.Recv()
		if err != nil {
			return 0, err
		}
		run = m.GetRun()
	}
	d := time.Since(start)
	if run.Lease.JobId != j.ID {
		return 0, fmt.Errorf("got job %s, want %s", run.Lease.JobId, j.ID)
	}
	a.seq++
	err = a.stream.Send(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Result{Result: &agentrpc.JobResult{
		BatchSeq: a.seq, Lease: run.Lease, Status: string(runner.StatusSuccess),
	}}})
	if err != nil {
		return 0, err
	}
	for {
		m, err := a.stream.Recv()
		if err != nil {
			return 0, err
		}
		if m.GetAck().GetUpTo() >= a.seq {
			return d, nil
		}
	}
}

// localWorker is the baseline: a claim loop in this process, as
// worker.Worker runs it.
type localWorker struct {
	got    chan spec.Assignment
	cancel context.CancelFunc
	done   chan struct{}
}

func startLocal(ctx context.Context, svc *scheduler.Service) *localWorker {
	ctx, cancel := context.WithCancel(ctx)
	w := &localWorker{got: make(chan spec.Assignment, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		poll := time.NewTicker(time.Second)
		defer poll.Stop()
		for {
			queued := svc.Queued()
			as, err := svc.Claim(ctx, "bench-local", []string{"local"}, 1)
			if err != nil && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "bench/dispatch: local claim:", err)
			}
			for _, a := range as {
				w.got <- a
			}
			select {
			case <-ctx.Done():
				return
			case <-queued:
			case <-poll.C:
			}
		}
	}()
	return w
}

func (w *localWorker) stop() { w.cancel(); <-w.done }

func (w *localWorker) round(ctx context.Context, svc *scheduler.Service) (time.Duration, error) {
	start := time.Now()
	j, err := svc.SubmitJob(ctx, jobspec.Spec{Name: "bench", Command: "true", Labels: []string{"local"}}, "bench")
	if err != nil {
		return 0, err
	}
	var a spec.Assignment
	select {
	case a = <-w.got:
	case <-time.After(10 * time.Second):
		return 0, errors.New("the in-process worker got no job in 10s")
	}
	d := time.Since(start)
	if a.Lease.JobID != j.ID {
		return 0, fmt.Errorf("got job %s, want %s", a.Lease.JobID, j.ID)
	}
	return d, svc.Finish(ctx, a.Lease, runner.JobResult{Status: runner.StatusSuccess})
}

type summary struct{ p50, p99, mean time.Duration }

func summarize(ds []time.Duration) summary {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return summary{p50: s[len(s)/2], p99: s[len(s)*99/100], mean: sum / time.Duration(len(s))}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
