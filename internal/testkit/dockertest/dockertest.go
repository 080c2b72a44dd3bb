// Package dockertest gives tests a Docker Engine client and images that
// need no registry: a small busybox image and the worker image of
// deploy/worker. Both are built through the Engine API from the host's
// busybox-static (and bash-static) and tagged with a hash of their
// content, so that the engine builds each content once. Tests skip when no
// engine answers or the host has no busybox.
package dockertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// Client returns a client of the engine that DOCKER_HOST (or the default
// socket) names, its API version negotiated, closed when t ends. It skips
// t when no engine answers.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Skipf("dockertest: no Docker client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		t.Skipf("dockertest: no Docker Engine answers: %v", err)
	}
	return cli
}

const busyboxDockerfile = `FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
`

var busybox, worker image

// BusyboxImage returns the reference of an image of a busybox root
// filesystem (with bash when the host has bash-static), oxide-test/busybox
// tagged by content, building it when the engine lacks it.
func BusyboxImage(t testing.TB, cli *client.Client) string {
	t.Helper()
	return need(t, cli, Busybox)
}

// WorkerImage returns the reference of the worker image of
// deploy/worker/Dockerfile with a static build of ./cmd/oxide-agent,
// oxide-test/worker tagged by content, building it when the engine lacks
// it.
func WorkerImage(t testing.TB, cli *client.Client) string {
	t.Helper()
	return need(t, cli, Worker)
}

// need skips t without a static busybox, and fails it when the image
// cannot be built.
func need(t testing.TB, cli *client.Client, get func(context.Context, *client.Client) (string, error)) string {
	t.Helper()
	if err := static(busyboxPath); err != nil {
		t.Skipf("dockertest: no static busybox to build test images from (apt-get install busybox-static; scripts/test.sh does): %v", err)
	}
	ref, err := get(t.Context(), cli)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	return ref
}

// Busybox is BusyboxImage for programs other than tests (benchmarks).
func Busybox(ctx context.Context, cli *client.Client) (string, error) {
	return busybox.get(ctx, cli, "oxide-test/busybox", func(context.Context) (tree, error) {
		root, err := rootfs("Oxide test busybox")
		if err != nil {
			return nil, err
		}
		c := root.under("rootfs")
		c.file("Dockerfile", 0o644, []byte(busyboxDockerfile))
		return c, nil
	})
}

// Worker is WorkerImage for programs other than tests (benchmarks).
func Worker(ctx context.Context, cli *client.Client) (string, error) {
	return worker.get(ctx, cli, "oxide-test/worker", func(ctx context.Context) (tree, error) {
		mod, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		dockerfile, err := os.ReadFile(filepath.Join(mod, "deploy", "worker", "Dockerfile"))
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "oxide-worker-image-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "oxide-agent")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/oxide-agent")
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/oxide-agent: %w\n%s", err, out)
		}
		agent, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		root, err := rootfs("Oxide worker")
		if err != nil {
			return nil, err
		}
		c := root.under("rootfs")
		c.file("Dockerfile", 0o644, dockerfile)
		c.file("oxide-agent", 0o755, agent)
		return c, nil
	})
}

// An image is built at most once per process.
type image struct {
	once sync.Once
	ref  string
	err  error
}

// get returns the reference of the image of the build context that
// content makes, built once as repo:<hash> when the engine lacks it.
func (i *image) get(ctx context.Context, cli *client.Client, repo string, content func(context.Context) (tree, error)) (string, error) {
	i.once.Do(func() {
		c, err := content(ctx)
		if err != nil {
			i.err = err
			return
		}
		i.ref, _, i.err = build(ctx, cli, repo, c)
	})
	if i.err != nil {
		return "", fmt.Errorf("%s: %w", repo, i.err)
	}
	return i.ref, nil
}

// moduleRoot returns the directory of the go.mod above the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
