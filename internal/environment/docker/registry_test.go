package docker_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/bcrypt"

	"github.com/oxide-ci/oxide/internal/environment/docker"
	"github.com/oxide-ci/oxide/internal/pipeline"
	"github.com/oxide-ci/oxide/internal/runner"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/testkit"
)

// TestRegistryCredentials: an image that is not on the machine is pulled
// from its registry with the password of registry.password_secret. The
// registry is real: Debian's docker-registry (the distribution registry)
// on loopback with htpasswd authentication, which the engine reaches
// without TLS as it does every registry on 127.0.0.0/8.
func TestRegistryCredentials(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("no docker-registry (apt-get install docker-registry; scripts/test.sh does)")
	}
	e, cli, image := engine(t, docker.Options{})
	addr := startRegistry(t, bin, "oxide", "right-password")

	ref := addr + "/oxide-test/private:1"
	ctx := t.Context()
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: image, Target: ref}); err != nil {
		t.Fatal(err)
	}
	auth, _ := authconfig.Encode(registry.AuthConfig{Username: "oxide", Password: "right-password", ServerAddress: addr})
	push, err := cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
	if err == nil {
		err = push.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("push to the test registry: %v", err)
	}
	untag := func() {
		cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{}) // the tag only: the image has another
	}
	untag()
	t.Cleanup(untag)

	ws := t.TempDir()
	c := &pipeline.Container{Image: ref, Registry: &pipeline.Registry{URL: addr, Username: "oxide", PasswordSecret: "REGISTRY_PASSWORD"}}
	wrong := e.Env("job-wrong-password", c, ws, "wrong-password")
	err = wrong.Prepare(ctx)
	wrong.Cleanup(context.Background())
	if err == nil || !strings.Contains(err.Error(), ref) {
		t.Fatalf("wrong password: %v; want a pull error naming %s", err, ref)
	}
	res, out := run(t, e.Env("job-right-password", c, ws, "right-password"), ws,
		[]*spec.Step{step("hello", `cat /etc/os-release`)})
	if res.Status != runner.StatusSuccess || !strings.Contains(out, "Oxide test busybox") {
		t.Fatalf("pulled with the right password: %s\n%s", res.Status, out)
	}
}

// startRegistry runs a registry on a free loopback port that admits user
// with password, and returns its address.
func startRegistry(t *testing.T, bin, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	config := filepath.Join(dir, "config.yml")
	os.WriteFile(config, fmt.Appendf(nil, `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
auth:
  htpasswd:
    realm: oxide-test
    path: %s
`, filepath.Join(dir, "data"), addr, htpasswd), 0o600)
	cmd := exec.Command(bin, "serve", config)
	var log bytes.Buffer // its access log, shown when the test fails
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("registry log:\n%s", log.String())
		}
	})
	testkit.WaitFor(t, 10*time.Second, "the registry to answer", func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
	return addr
}
