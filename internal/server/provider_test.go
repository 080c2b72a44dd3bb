package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oxide-ci/oxide/internal/events"
	"github.com/oxide-ci/oxide/internal/events/natsbus"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
	"github.com/oxide-ci/oxide/internal/testkit"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

// providerConfig is a server whose only workers are containers of the
// worker image on the real Docker engine, made by the autoscaler.
func providerConfig(t *testing.T, cli *client.Client) Config {
	cfg := testConfig(t)
	cfg.Agents = 0
	cfg.Provider = "docker"
	cfg.WorkerImage = dockertest.WorkerImage(t, cli)
	cfg.WorkerIdle = time.Second
	cfg.WorkerRegister = 30 * time.Second
	cfg.WorkerPool = "test-" + t.Name()
	return cfg
}

// workerContainers counts the running worker containers of the provider
// and removes them all when the test ends.
func workerContainers(t *testing.T, cli *client.Client, cfg Config) func() int {
	f := client.Filters{}.Add("label", "oxide.role=worker", "oxide.pool="+cfg.WorkerPool)
	list := func(ctx context.Context) []string {
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			t.Error(err)
			return nil
		}
		var ids []string
		for _, c := range cs.Items {
			if c.State == "running" {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	t.Cleanup(func() {
		cs, _ := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
		for _, c := range cs.Items {
			cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	})
	return func() int { return len(list(t.Context())) }
}

// workers reads the provisioned workers from the stopped server's
// database.
func workers(t *testing.T, cfg Config) []store.Worker {
	st, err := sqlite.Open(t.Context(), filepath.Join(cfg.DataDir, "oxide.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws, err := st.Workers().List(t.Context(), "docker:"+cfg.WorkerPool)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// TestAutoscaleBurst: a burst of 20 jobs makes the autoscaler start worker
// containers up to its maximum, never more; their agents register and run
// every job; idle, the pool shrinks back to its minimum.
func TestAutoscaleBurst(t *testing.T) {
	cli := dockertest.Client(t)
	cfg := providerConfig(t, cli)
	running := workerContainers(t, cli, cfg)
	cfg.WorkersMin, cfg.WorkersMax = 1, 3
	s := startServer(t, cfg)
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		return running() == 1, "want the minimum of 1 worker running"
	})

	var ids []string
	for range 20 {
		var j struct{ ID string }
		s.call(t, "POST", "/api/v1/jobs", s.Token, map[string]any{"name": "burst", "command": "sleep 0.3; echo done"}).want(t, 201, &j)
		ids = append(ids, j.ID)
	}
	most := 0
	testkit.Until(t, 120*time.Second, func() (bool, string) {
		most = max(most, running())
		done := 0
		for _, id := range ids {
			var j struct{ State, Error string }
			s.call(t, "GET", "/api/v1/jobs/"+id, s.Token, nil).want(t, 200, &j)
			if j.State == "succeeded" {
				done++
			} else if j.State == "failed" || j.State == "cancelled" {
				t.Fatalf("job %s %s: %s", id, j.State, j.Error)
			}
		}
		return done == len(ids), "jobs not all succeeded yet"
	})
	if most != cfg.WorkersMax {
		t.Errorf("at most %d workers ran during the burst, want the maximum %d", most, cfg.WorkersMax)
	}
	var agents struct{ Items []struct{ ID string } }
	s.call(t, "GET", "/api/v1/agents", s.Token, nil).want(t, 200, &agents)
	if len(agents.Items) > cfg.WorkersMax {
		t.Errorf("%d agents registered, more than the maximum %d", len(agents.Items), cfg.WorkersMax)
	}
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		n := running()
		most = max(most, n)
		var ws struct{ Items []struct{ State string } }
		s.call(t, "GET", "/api/v1/workers", s.Token, nil).want(t, 200, &ws)
		states := map[string]int{}
		for _, w := range ws.Items {
			states[w.State]++
		}
		return n == cfg.WorkersMin && states["ready"] == cfg.WorkersMin && states["terminated"] == cfg.WorkersMax-cfg.WorkersMin,
			fmt.Sprintf("%d running, workers %v: the pool has not shrunk to its minimum", n, states)
	})
	if most > cfg.WorkersMax {
		t.Errorf("%d workers ran at once, more than the maximum %d", most, cfg.WorkersMax)
	}
	var providers struct {
		Items []struct {
			Name     string
			Healthy  bool
			Capacity struct{ CPUs int }
		}
	}
	s.call(t, "GET", "/api/v1/providers", s.Token, nil).want(t, 200, &providers)
	if len(providers.Items) != 1 || !providers.Items[0].Healthy || providers.Items[0].Capacity.CPUs == 0 {
		t.Errorf("providers %+v: want docker, healthy, with its capacity", providers.Items)
	}
}

// TestAutoscaleRegisterTimeout: a worker whose agent cannot reach the
// server (no network) is destroyed when its registration time is up, and
// marked failed; the job it was made for is still queued, and gets the
// next worker. The worker's changes reach NATS as oxide.worker.* events.
func TestAutoscaleRegisterTimeout(t *testing.T) {
	cli := dockertest.Client(t)
	emb, err := natsbus.StartEmbedded(t.Context(), t.TempDir(), natsbus.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown) // after the server's cleanup, which is registered later
	cfg := providerConfig(t, cli)
	cfg.NATSURL = emb.ClientURL()
	running := workerContainers(t, cli, cfg)
	cfg.WorkersMin, cfg.WorkersMax = 0, 1
	cfg.WorkerNetwork = "none"
	cfg.WorkerRegister = 2 * time.Second
	s := startServer(t, cfg)
	var j struct{ ID string }
	s.call(t, "POST", "/api/v1/jobs", s.Token, map[string]any{"name": "stranded", "command": "echo never"}).want(t, 201, &j)
	testkit.Until(t, 30*time.Second, func() (bool, string) { return running() == 1, "no worker started" })
	// The reconciliation that fails the first worker, its deadline past,
	// makes the next one for the job.
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		var ws struct{ Items []struct{ State string } }
		s.call(t, "GET", "/api/v1/workers", s.Token, nil).want(t, 200, &ws)
		failed := slices.ContainsFunc(ws.Items, func(w struct{ State string }) bool { return w.State == string(store.WorkerFailed) })
		return failed && len(ws.Items) >= 2, fmt.Sprintf("workers %+v: want the first failed and another", ws.Items)
	})
	var job struct{ State string }
	s.call(t, "GET", "/api/v1/jobs/"+j.ID, s.Token, nil).want(t, 200, &job)
	if job.State != "queued" {
		t.Errorf("job %s, want still queued", job.State)
	}
	if err := s.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	ws := workers(t, cfg)
	failed := 0
	for _, w := range ws {
		if w.State == store.WorkerFailed && w.Error != "" {
			failed++
		}
	}
	if failed == 0 || len(ws) < 2 {
		t.Fatalf("workers %+v: want the first failed, with a reason, and another made for the job", ws)
	}
	f := client.Filters{}.Add("label", "oxide.worker="+ws[0].ID)
	if cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f}); err != nil || len(cs.Items) != 0 {
		t.Errorf("the failed worker's container is still there: %v, %v", cs.Items, err)
	}

	nc, err := nats.Connect(emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(t.Context(), natsbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{"provisioning", "failed"} {
		subject := "oxide.worker." + what + "." + events.Token(ws[0].ID)
		m, err := stream.GetLastMsgForSubject(t.Context(), subject)
		if err != nil {
			t.Errorf("%s: %v", subject, err)
			continue
		}
		var w struct{ ID, State string }
		if err := json.Unmarshal(m.Data, &w); err != nil || w.ID != ws[0].ID || w.State != what {
			t.Errorf("%s: %s", subject, m.Data)
		}
	}
}

// TestAutoscaleContainerJob: with the engine's socket, an elastic worker
// runs a job that asks for a container in a container of that image,
// beside itself on the engine, and the job's workspace is where the
// engine finds it.
func TestAutoscaleContainerJob(t *testing.T) {
	cli := dockertest.Client(t)
	const socket = "/var/run/docker.sock"
	if _, err := os.Stat(socket); err != nil {
		t.Skipf("the engine has no socket at %s: %v", socket, err)
	}
	cfg := providerConfig(t, cli)
	workerContainers(t, cli, cfg)
	cfg.WorkersMin, cfg.WorkersMax = 0, 1
	cfg.WorkerDockerSocket = socket
	s := startServer(t, cfg)
	image := dockertest.BusyboxImage(t, cli)
	var j struct{ ID string }
	s.call(t, "POST", "/api/v1/jobs", s.Token, map[string]any{
		"name": "in a container", "image": image,
		"command": "cat /etc/os-release; pwd; echo made > here.txt; cat here.txt",
	}).want(t, 201, &j)
	var job struct{ State, Error string }
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		s.call(t, "GET", "/api/v1/jobs/"+j.ID, s.Token, nil).want(t, 200, &job)
		return job.State == "succeeded" || job.State == "failed", "job " + job.State
	})
	var logs struct{ Lines []struct{ Text string } }
	s.call(t, "GET", "/api/v1/jobs/"+j.ID+"/logs", s.Token, nil).want(t, 200, &logs)
	var text []string
	for _, l := range logs.Lines {
		text = append(text, l.Text)
	}
	got := strings.Join(text, "\n")
	if job.State != "succeeded" || !strings.Contains(got, `NAME="Oxide test busybox"`) || !strings.Contains(got, "/workspace\nmade") {
		t.Fatalf("job %s (%s), logs:\n%s\nwant it run in the job's image, in its workspace", job.State, job.Error, got)
	}
}

// TestPipelineInContainer: the server's in-process worker runs a stage
// that asks for a container in one, on the real engine, and a stage of the
// host beside it; outputs cross from one to the other.
func TestPipelineInContainer(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.BusyboxImage(t, cli)
	cfg := testConfig(t)
	cfg.HostOnly = false
	s := startServer(t, cfg)
	def := fmt.Sprintf(`version: "1"
name: boxed
stages:
  - name: inside
    environment:
      type: container
      container:
        image: %s
    steps:
      - name: release
        id: release
        run: |
          cat /etc/os-release
          echo "name=$(grep ^NAME= /etc/os-release | cut -d'"' -f2)" >> "$OXIDE_OUTPUT"
  - name: outside
    steps:
      - name: report
        run: echo "the container was ${{ steps.release.outputs.name }}"
`, image)
	var p struct{ ID string }
	s.call(t, "POST", "/api/v1/pipelines", s.Token, map[string]string{"name": "boxed", "definition": def}).want(t, 201, &p)
	var run runJSON
	s.call(t, "POST", "/api/v1/pipelines/"+p.ID+"/runs", s.Token, map[string]any{}).want(t, 201, &run)
	testkit.Until(t, 60*time.Second, func() (bool, string) {
		s.call(t, "GET", "/api/v1/runs/"+run.ID, s.Token, nil).want(t, 200, &run)
		return run.Status != "queued" && run.Status != "running", "run " + run.Status
	})
	var logs struct{ Lines []struct{ Text string } }
	s.call(t, "GET", "/api/v1/runs/"+run.ID+"/logs", s.Token, nil).want(t, 200, &logs)
	var text []string
	for _, l := range logs.Lines {
		text = append(text, l.Text)
	}
	got := strings.Join(text, "\n")
	if run.Status != "success" || !strings.Contains(got, "the container was Oxide test busybox") {
		t.Fatalf("run %s, logs:\n%s", run.Status, got)
	}
}
