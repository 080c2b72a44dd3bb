package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksLean: every oxide invocation runs the package inits of all it
// links, so the CLI links none of the server's or the moby client's heavy
// dependencies (bench/local measures its start-up).
func TestLinksLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	heavy := []string{
		"github.com/moby/moby/client", "github.com/distribution/reference", "github.com/opencontainers/",
		"go.opentelemetry.io/", "google.golang.org/grpc", "github.com/nats-io/", "modernc.org/sqlite",
		"github.com/jackc/pgx", "github.com/oxide-ci/oxide/internal/jobspec", "github.com/oxide-ci/oxide/internal/server",
	}
	for dep := range strings.Lines(string(out)) {
		for _, pkg := range heavy {
			if strings.HasPrefix(dep, pkg) {
				t.Errorf("oxide links %s", strings.TrimSpace(dep))
			}
		}
	}
}
