package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/oxide-ci/oxide/internal/agentrpc"
	"github.com/oxide-ci/oxide/internal/pki"
	"github.com/oxide-ci/oxide/internal/store"
)

// heartbeatEvery is the agent's default heartbeat interval.
const heartbeatEvery = 10 * time.Second

// agentMemory runs oxide-server as a process and reads its memory idle and
// with n simulated agents connected (see the package documentation).
func agentMemory(dir, bin, admin string, n int) error {
	httpAddr, grpcAddr := freeAddr(), freeAddr()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--data-dir", dir, "--http-addr", httpAddr, "--grpc-addr", grpcAddr, "--agents", "0", "--log-level", "warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	c := newClient("http://"+httpAddr, admin, 8)
	deadline := time.Now().Add(30 * time.Second)
	for c.do("GET", "/health", nil, 200, nil) != nil {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("oxide-server exited (%v):\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("oxide-server did not answer within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	pid := cmd.Process.Pid
	idle, _, err := procMem(pid)
	if err != nil {
		return err
	}

	ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), "")
	if err != nil {
		return err
	}
	began := time.Now()
	certs, err := register(c, ca, grpcAddr, n)
	if err != nil {
		return err
	}
	registered := time.Since(began)
	afterRegister, _, err := procMem(pid)
	if err != nil {
		return err
	}

	began = time.Now()
	sims := make([]*simAgent, n)
	defer func() {
		for _, a := range sims {
			if a != nil {
				a.cc.Close()
			}
		}
	}()
	if err := parallel(n, 16, func(i int) (err error) {
		sims[i], err = connect(ca, grpcAddr, certs[i])
		return err
	}); err != nil {
		return err
	}
	if err := waitOnline(c, n, 60*time.Second); err != nil {
		return err
	}
	connected := time.Since(began)
	stopBeats := heartbeats(sims)
	defer stopBeats()
	time.Sleep(heartbeatEvery + 2*time.Second) // every agent has sent a heartbeat since
	if err := waitOnline(c, n, time.Second); err != nil {
		return fmt.Errorf("after a round of heartbeats: %w", err)
	}
	select {
	case err := <-exited:
		exited <- err
		return fmt.Errorf("oxide-server exited (%v):\n%s", err, stderr.String())
	default:
	}
	with, hwm, err := procMem(pid)
	if err != nil {
		return err
	}
	fmt.Printf("oxide-server memory (its own process, SQLite, --agents 0), VmRSS from /proc/PID/status:\n")
	fmt.Printf("  %-62s %6.1f MiB\n", "idle, after 3s", mib(idle))
	fmt.Printf("  %-62s %6.1f MiB\n", fmt.Sprintf("%d agents registered (in %s), no stream yet", n, registered.Round(time.Millisecond)), mib(afterRegister))
	fmt.Printf("  %-62s %6.1f MiB (VmHWM %.1f MiB), %.1fx idle\n",
		fmt.Sprintf("%d agents connected (in %s), after 12s of heartbeats", n, connected.Round(time.Millisecond)), mib(with), mib(hwm), float64(with)/float64(idle))
	fmt.Printf("  per connected agent: %.1f KiB over idle, %.1f KiB over registered without a stream\n",
		float64(with-idle)/float64(n), float64(with-afterRegister)/float64(n))
	return nil
}

// register makes n bootstrap tokens and registers an agent with each,
// returning their client certificates.
func register(c *client, ca *pki.CA, addr string, n int) ([]tls.Certificate, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(ca.Pool(), nil, "127.0.0.1"))))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rpc := agentrpc.NewAgentClient(cc)
	certs := make([]tls.Certificate, n)
	err = parallel(n, 8, func(i int) error {
		var tok struct{ Token string }
		if err := c.do("POST", "/api/v1/agents/tokens", map[string]any{"ttl": "10m"}, 201, &tok); err != nil {
			return err
		}
		key, err := pki.NewKey()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("sim-%04d", i+1)
		csr, err := pki.NewCSR(key, name)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := rpc.Register(ctx, &agentrpc.RegisterRequest{Token: tok.Token, Name: name, Csr: csr, Capacity: 1, Version: "sim", Os: "linux", Arch: "amd64"})
		if err != nil {
			return fmt.Errorf("register: %w", err)
		}
		keyPEM, err := pki.MarshalKey(key)
		if err != nil {
			return err
		}
		certs[i], err = tls.X509KeyPair(resp.Certificate, keyPEM)
		return err
	})
	return certs, err
}

// simAgent is a simulated agent: one mTLS connection, one Connect stream,
// one goroutine that reads it; heartbeats come from one goroutine for all.
type simAgent struct {
	cc     *grpc.ClientConn
	stream grpc.BidiStreamingClient[agentrpc.AgentMessage, agentrpc.ServerMessage]
}

func connect(ca *pki.CA, addr string, cert tls.Certificate) (*simAgent, error) {
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(ca.Pool(), &cert, "127.0.0.1"))),
		// Light clients: the server's buffers are measured, not ours.
		grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	if err != nil {
		return nil, err
	}
	stream, err := agentrpc.NewAgentClient(cc).Connect(context.Background())
	if err == nil {
		err = stream.Send(&agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Hello{Hello: &agentrpc.Hello{Version: "sim", Capacity: 1}}})
	}
	if err != nil {
		cc.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	return &simAgent{cc: cc, stream: stream}, nil
}

// heartbeats sends each agent a heartbeat every heartbeatEvery, the agents
// spread evenly over the interval, from one goroutine; stop ends it.
func heartbeats(sims []*simAgent) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(heartbeatEvery / time.Duration(len(sims)))
		defer t.Stop()
		hb := &agentrpc.AgentMessage{Msg: &agentrpc.AgentMessage_Heartbeat{Heartbeat: &agentrpc.Heartbeat{
			CpuPercent: 1, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 8 << 30, DiskFreeBytes: 100 << 30,
		}}}
		for i := 0; ; i = (i + 1) % len(sims) {
			select {
			case <-done:
				return
			case <-t.C:
				sims[i].stream.Send(hb) // a broken stream shows as an agent not online
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// waitOnline waits until the API lists n agents online.
func waitOnline(c *client, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		online, err := countOnline(c)
		if err != nil {
			return err
		}
		if online == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents online after %s", online, n, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countOnline(c *client) (int, error) {
	online, cursor := 0, ""
	for {
		var page struct {
			Items []struct{ Status store.AgentStatus }
			Next  string
		}
		if err := c.do(http.MethodGet, "/api/v1/agents?limit=500&cursor="+url.QueryEscape(cursor), nil, 200, &page); err != nil {
			return 0, err
		}
		for _, a := range page.Items {
			if a.Status == store.AgentOnline {
				online++
			}
		}
		if page.Next == "" {
			return online, nil
		}
		cursor = page.Next
	}
}

// parallel calls fn(0) … fn(n-1) from workers goroutines and returns the
// first error; after an error no new call starts.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Bool
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return first
}
