// Command container measures what containers cost, on this machine's
// Docker engine:
//
//	go run ./bench/container [-n 15] [-workers 4] [-rounds 3]
//
// Per-job overhead: each of -n rounds runs a job of two steps (`true`,
// then `echo hi`) in the host environment and in the container
// environment (internal/environment/docker, the busybox test image),
// alternately, and times Prepare, each Exec and Cleanup. The host run is
// the baseline; the container's extra is container create + start, an
// exec per step, and remove.
//
// Autoscaling: each of -rounds rounds starts a server (SQLite, in this
// process) whose only workers come from the Docker provider, with up to
// -workers workers and none kept idle, submits -workers jobs at once and
// times until that many agents have registered. The baseline, in the same
// rounds, is the same with one job and one worker: the ratio says how well
// provisioning runs in parallel. For scale, it also times the engine alone
// creating and starting as many containers of the worker image at once.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/environment/host"
	"github.com/oxide-ci/oxide/internal/pipeline"
	dockerprovider "github.com/oxide-ci/oxide/internal/provider/docker"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/server"
	"github.com/oxide-ci/oxide/internal/server/api"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

func main() {
	n := flag.Int("n", 15, "jobs in each environment")
	workers := flag.Int("workers", 4, "workers of a burst")
	rounds := flag.Int("rounds", 3, "bursts")
	flag.Parse()
	if err := run(*n, *workers, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench/container:", err)
		os.Exit(1)
	}
}

func run(n, workers, rounds int) error {
	ctx := context.Background()
	eng, err := docker.Connect(ctx, docker.Options{Owner: "bench"})
	if err != nil {
		return err
	}
	defer eng.Close()
	cli, err := dockerprovider.Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	image, err := dockertest.Busybox(ctx, cli)
	if err != nil {
		return err
	}
	if err := jobOverhead(ctx, eng, image, n); err != nil {
		return err
	}
	workerImage, err := dockertest.Worker(ctx, cli)
	if err != nil {
		return err
	}
	return burst(cli, workerImage, workers, rounds)
}

// phases are the times of one job.
type phases struct{ prepare, first, second, cleanup, total time.Duration }

func jobOverhead(ctx context.Context, eng *docker.Engine, image string, n int) error {
	ws, err := os.MkdirTemp("", "oxide-bench-ws-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ws)
	var onHost, inContainer []phases
	for i := range n + 2 { // two rounds of warm-up
		h, err := job(ctx, host.New(host.Options{}), ws)
		if err != nil {
			return err
		}
		c, err := job(ctx, eng.Env(fmt.Sprint("bench-", i), &pipeline.Container{Image: image}, ws, ""), ws)
		if err != nil {
			return err
		}
		if i >= 2 {
			onHost, inContainer = append(onHost, h), append(inContainer, c)
		}
	}
	h, c := median(onHost), median(inContainer)
	fmt.Printf("per-job overhead: a job of two steps (true; echo hi), %d jobs each, medians\n\n", n)
	fmt.Printf("%-10s %10s %10s %10s %10s %10s  %s\n", "", "prepare", "step 1", "step 2", "cleanup", "total", "ratio")
	row := func(name string, p phases, ratio string) {
		fmt.Printf("%-10s %10s %10s %10s %10s %10s  %s\n", name, ms(p.prepare), ms(p.first), ms(p.second), ms(p.cleanup), ms(p.total), ratio)
	}
	row("host", h, "1.00 (baseline)")
	row("container", c, fmt.Sprintf("%.1f", float64(c.total)/float64(h.total)))
	fmt.Printf("\ncontainer extra per job: %s (create + start %s, remove %s); per step: %s more than on the host\n\n",
		ms(c.total-h.total), ms(c.prepare), ms(c.cleanup), ms(c.second-h.second))
	return nil
}

// job times one job's phases in env.
func job(ctx context.Context, env runner.Environment, ws string) (phases, error) {
	var p phases
	start := time.Now()
	if err := env.Prepare(ctx); err != nil {
		return p, err
	}
	p.prepare = time.Since(start)
	for i, script := range []string{"true", "echo hi"} {
		t := time.Now()
		code, err := env.Exec(ctx, runner.Command{Script: script, Dir: ws, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: io.Discard, Stderr: io.Discard})
		if err != nil || code != 0 {
			return p, fmt.Errorf("step %q: exit %d, %v", script, code, err)
		}
		if i == 0 {
			p.first = time.Since(t)
		} else {
			p.second = time.Since(t)
		}
	}
	t := time.Now()
	if err := env.Cleanup(ctx); err != nil {
		return p, err
	}
	p.cleanup = time.Since(t)
	p.total = time.Since(start)
	return p, nil
}

func burst(cli *client.Client, image string, workers, rounds int) error {
	var many, one, engineMany, engineOne []time.Duration
	for range rounds {
		d, err := started(cli, image, 1)
		if err != nil {
			return err
		}
		engineOne = append(engineOne, d)
		if d, err = started(cli, image, workers); err != nil {
			return err
		}
		engineMany = append(engineMany, d)
		if d, err = registered(cli, image, 1); err != nil {
			return err
		}
		one = append(one, d)
		if d, err = registered(cli, image, workers); err != nil {
			return err
		}
		many = append(many, d)
	}
	m, o := medianOf(many), medianOf(one)
	fmt.Printf("autoscaling: jobs submitted → every worker container's agent registered, %d rounds, medians\n\n", rounds)
	fmt.Printf("%-22s %10s  %s\n", "", "time", "ratio")
	fmt.Printf("%-22s %10s  %s\n", "1 job, 1 worker", ms(o), "1.00 (baseline)")
	fmt.Printf("%-22s %10s  %.2f\n", fmt.Sprintf("%d jobs, %d workers", workers, workers), ms(m), float64(m)/float64(o))
	eo, em := medianOf(engineOne), medianOf(engineMany)
	fmt.Printf("%-22s %10s  %.2f\n", "engine alone: 1", ms(eo), 1.0)
	fmt.Printf("%-22s %10s  %.2f\n", fmt.Sprintf("engine alone: %d", workers), ms(em), float64(em)/float64(eo))
	fmt.Printf("\n(engine alone: containers of the worker image created and started at once through the API, host network as the workers, no agent)\n")
	fmt.Printf("rounds: 1 worker %v; %d workers %v\n", rounded(one), workers, rounded(many))
	return nil
}

// started times creating and starting n containers of image at once, the
// engine's own share of provisioning, and removes them.
func started(cli *client.Client, image string, n int) (time.Duration, error) {
	ctx := context.Background()
	errs := make(chan error, n)
	start := time.Now()
	for range n {
		go func() {
			c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Image: image, Config: &container.Config{
				Entrypoint: []string{"/bin/sleep", "60"}, Labels: map[string]string{"oxide.pool": "bench-engine"},
			}, HostConfig: &container.HostConfig{NetworkMode: "host"}})
			if err == nil {
				_, err = cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{})
			}
			errs <- err
		}()
	}
	var err error
	for range n {
		if e := <-errs; e != nil {
			err = e
		}
	}
	took := time.Since(start)
	removeWorkers(cli, "bench-engine")
	return took, err
}

// registered starts a server whose provider makes up to workers workers,
// submits that many jobs, and returns how long until that many agents
// registered.
func registered(cli *client.Client, image string, workers int) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "oxide-bench-server-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	token := api.NewToken()
	os.Setenv("OXIDE_ADMIN_TOKEN", token)
	cfg := server.Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", Docker: docker.ModeOff,
		Provider: "docker", WorkerImage: image, WorkerNetwork: "host", WorkerPool: "bench-" + dir,
		WorkersMax: workers, ScaleFactor: 1, WorkerIdle: time.Hour, WorkerRegister: time.Minute,
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { ready <- a }) }()
	defer func() {
		cancel()
		<-done
		removeWorkers(cli, cfg.WorkerPool)
	}()
	var url string
	select {
	case a := <-ready:
		url = "http://" + a
	case err := <-done:
		return 0, err
	}
	start := time.Now()
	for range workers {
		if err := call("POST", url+"/api/v1/jobs", token, map[string]any{"name": "burst", "command": "sleep 1"}, nil); err != nil {
			return 0, err
		}
	}
	for time.Since(start) < 2*time.Minute {
		var agents struct{ Items []json.RawMessage }
		if err := call("GET", url+"/api/v1/agents", token, nil, &agents); err != nil {
			return 0, err
		}
		if len(agents.Items) >= workers {
			return time.Since(start), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("%d workers did not register within 2m", workers)
}

// removeWorkers removes what a round's server left of its pool: its
// workers keep running when it stops, for the next server to take over.
func removeWorkers(cli *client.Client, pool string) {
	ctx := context.Background()
	cs, _ := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", "oxide.pool="+pool)})
	for _, c := range cs.Items {
		cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}
}

func call(method, url, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func median(ps []phases) phases {
	pick := func(f func(phases) time.Duration) time.Duration {
		var ds []time.Duration
		for _, p := range ps {
			ds = append(ds, f(p))
		}
		return medianOf(ds)
	}
	return phases{
		prepare: pick(func(p phases) time.Duration { return p.prepare }),
		first:   pick(func(p phases) time.Duration { return p.first }),
		second:  pick(func(p phases) time.Duration { return p.second }),
		cleanup: pick(func(p phases) time.Duration { return p.cleanup }),
		total:   pick(func(p phases) time.Duration { return p.total }),
	}
}

func medianOf(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)/2]
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
