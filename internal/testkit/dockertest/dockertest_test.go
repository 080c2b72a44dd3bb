package dockertest

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// run runs cmd in a container of image (with entrypoint, when not nil)
// and returns its output, failing t when it exits non-zero.
func run(t *testing.T, cli *client.Client, image string, entrypoint []string, cmd ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Image:  image,
		Config: &container.Config{Entrypoint: entrypoint, Cmd: cmd, Labels: map[string]string{"oxide.test": t.Name()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			t.Error(err)
		}
	})
	wait := cli.ContainerWait(ctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	var code int64
	select {
	case res := <-wait.Result:
		code = res.StatusCode
	case err := <-wait.Error:
		t.Fatal(err)
	}
	logs, err := cli.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("%q in %s: exit %d\n%s", cmd, image, code, &out)
	}
	return out.String()
}

func TestBusyboxImage(t *testing.T) {
	t.Parallel()
	cli := Client(t)
	image := BusyboxImage(t, cli)
	if again := BusyboxImage(t, cli); again != image {
		t.Fatalf("BusyboxImage again = %s, want %s", again, image)
	}
	const script = `. /etc/os-release; echo "$NAME"; stat -c %a /tmp /root; id -u nobody; echo "$PATH"; /usr/bin/env true && echo env`
	want := `Oxide test busybox
1777
700
65534
/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
env
`
	if got := run(t, cli, image, nil, "sh", "-c", script); got != want {
		t.Errorf("in %s:\n%s\nwant\n%s", image, got, want)
	}
	if _, err := os.Stat(bashPath); err == nil {
		if got := run(t, cli, image, nil, "bash", "-c", `echo "$BASH_VERSION"`); got == "\n" {
			t.Errorf("no bash in %s", image)
		}
	}
}

func TestWorkerImage(t *testing.T) {
	t.Parallel()
	cli := Client(t)
	image := WorkerImage(t, cli)
	res, err := cli.ImageInspect(t.Context(), image)
	if err != nil {
		t.Fatal(err)
	}
	cfg := res.Config
	if want := []string{"/usr/local/bin/oxide-agent"}; !slices.Equal(cfg.Entrypoint, want) {
		t.Errorf("Entrypoint = %q, want %q", cfg.Entrypoint, want)
	}
	if _, ok := cfg.Volumes["/var/lib/oxide-agent"]; !ok || !slices.Contains(cfg.Env, "OXIDE_AGENT_DATA_DIR=/var/lib/oxide-agent") {
		t.Errorf("no data dir /var/lib/oxide-agent: volumes %v, env %q", cfg.Volumes, cfg.Env)
	}
	if got := run(t, cli, image, nil, "--version"); !strings.HasPrefix(got, "oxide-agent ") {
		t.Errorf("oxide-agent --version: %q", got)
	}
	if got := run(t, cli, image, []string{"sh", "-c"}, `. /etc/os-release; echo "$NAME"; test -d /var/lib/oxide-agent && echo ok`); got != "Oxide worker\nok\n" {
		t.Errorf("in %s: %q", image, got)
	}
}

// TestTreeTar checks that the same content makes the same context, so
// that its hash, the image's tag, finds the image built before.
func TestTreeTar(t *testing.T) {
	if err := static(busyboxPath); err != nil {
		t.Skip(err)
	}
	var tars [2][]byte
	for i := range tars {
		root, err := rootfs("x")
		if err != nil {
			t.Fatal(err)
		}
		if tars[i], err = root.under("rootfs").tar(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(tars[0], tars[1]) {
		t.Error("the same tree made different archives")
	}
}
