package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/oxide-ci/oxide/internal/provider"
	"github.com/oxide-ci/oxide/internal/testkit/dockertest"
)

// newSpec returns the spec of a worker with a new ID whose containers are
// removed when t ends. Its agent dials a port where no server listens.
func newSpec(t *testing.T, cli *client.Client) provider.Spec {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	id := hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx := context.Background()
		res, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", labelWorker+"="+id)})
		if err != nil {
			t.Error(err)
			return
		}
		for _, c := range res.Items {
			if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				t.Error(err)
			}
		}
	})
	return provider.Spec{ID: id, Server: "127.0.0.1:1", Token: "token-" + id, Labels: []string{"linux", "docker"}}
}

// instances returns the instances of worker id that p lists.
func instances(t *testing.T, p *Provider, id string) []provider.Instance {
	t.Helper()
	list, err := p.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(list, func(in provider.Instance) bool { return in.WorkerID != id })
}

func TestCreateListDestroy(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	p := New(cli, Config{Pool: pool(t), Image: dockertest.WorkerImage(t, cli), Concurrency: 2})
	spec := newSpec(t, cli)
	ctx := t.Context()

	handle, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cli.ContainerInspect(ctx, handle, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Container
	name := "oxide-worker-" + spec.ID[:8]
	if c.Name != "/"+name || !c.State.Running || c.HostConfig.NetworkMode != "host" {
		t.Errorf("container %s: running %t, network %s; want %s running on host", c.Name, c.State.Running, c.HostConfig.NetworkMode, name)
	}
	for k, v := range map[string]string{"oxide.managed": "true", "oxide.role": "worker", "oxide.worker": spec.ID, "oxide.provider": "docker"} {
		if c.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Config.Labels[k], v)
		}
	}
	for _, e := range []string{
		"OXIDE_AGENT_SERVER=127.0.0.1:1", "OXIDE_AGENT_TOKEN=" + spec.Token, "OXIDE_AGENT_LABELS=linux,docker",
		"OXIDE_AGENT_NAME=" + name, "OXIDE_AGENT_DATA_DIR=/var/lib/oxide-agent", "OXIDE_AGENT_CONCURRENCY=2",
	} {
		if !slices.Contains(c.Config.Env, e) {
			t.Errorf("no %s in env %q", e, c.Config.Env)
		}
	}

	if got, want := instances(t, p, spec.ID), []provider.Instance{{WorkerID: spec.ID, Handle: handle, Running: true}}; !slices.Equal(got, want) {
		t.Errorf("List: %+v, want %+v", got, want)
	}
	if capa, err := p.Capacity(ctx); err != nil || capa.Workers < 1 {
		t.Errorf("Capacity = %+v, %v; want a running worker", capa, err)
	}

	start := time.Now()
	if err := p.Destroy(ctx, handle); err != nil {
		t.Fatal(err)
	}
	// The agent ends on SIGTERM, long before the 10s grace period.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Destroy took %s", d)
	}
	if got := instances(t, p, spec.ID); len(got) != 0 {
		t.Errorf("List after Destroy: %+v", got)
	}
	if err := p.Destroy(ctx, handle); err != nil {
		t.Errorf("Destroy again: %v", err)
	}
}

func TestCreateMissingImage(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	spec := newSpec(t, cli)
	image := "oxide-test/missing:" + spec.ID
	p := New(cli, Config{Pool: pool(t), Image: image})
	_, err := p.Create(t.Context(), spec)
	if err == nil || !strings.Contains(err.Error(), image) {
		t.Fatalf("Create = %v, want an error naming %s", err, image)
	}
	t.Log(err)
	if got := instances(t, p, spec.ID); len(got) != 0 {
		t.Errorf("Create failed but left %+v", got)
	}
}

func TestCreateStartFails(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	spec := newSpec(t, cli)
	p := New(cli, Config{Pool: pool(t), Image: dockertest.WorkerImage(t, cli), Network: "oxide-test-missing-" + spec.ID})
	_, err := p.Create(t.Context(), spec)
	if err == nil {
		t.Fatal("Create on a missing network succeeded")
	}
	t.Log(err)
	if got := instances(t, p, spec.ID); len(got) != 0 {
		t.Errorf("Create failed but left %+v", got)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	if err := New(cli, Config{Pool: pool(t), Image: dockertest.WorkerImage(t, cli)}).Health(t.Context()); err != nil {
		t.Errorf("Health: %v", err)
	}
	const image = "oxide-test/missing:health"
	if err := New(cli, Config{Pool: pool(t), Image: image}).Health(t.Context()); err == nil || !strings.Contains(err.Error(), image) {
		t.Errorf("Health with a missing image = %v, want an error naming %s", err, image)
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	capa, err := New(cli, Config{Pool: pool(t), Image: "unused"}).Capacity(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if capa.CPUs <= 0 || capa.MemoryBytes <= 0 {
		t.Errorf("Capacity = %+v, want CPUs and memory", capa)
	}
}

// pool is a test's own pool, apart from other tests' workers.
func pool(t *testing.T) string { return "test-" + t.Name() }
