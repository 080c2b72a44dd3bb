package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/oxide-ci/oxide/sdk"
)

func TestWorkers(t *testing.T) {
	f := newFake(t)
	clientEnv(t, f.URL, fakeToken)

	r := oxide(t, "", "workers", "list").must(t, 0)
	has(t, "stdout", r.stdout, `^ID\s+PROVIDER\s+STATE\s+AGENT\s+AGE\s+ISOLATION\s+ERROR\n0b9e2f4c\s+docker\s+ready\s+a1\s+\d+s\s+-\s+-\n7d3a1b2c\s+docker\s+failed\s+-\s+\d+s\s+-\s+the agent did not register in 1m0s\n$`)

	f.requests()
	r = oxide(t, "", "workers", "list", "--state", "failed,terminated", "--provider", "docker").must(t, 0)
	if got := f.requests(); len(got) != 1 || got[0] != "GET /api/v1/workers?limit=50&provider=docker&state=failed&state=terminated" {
		t.Errorf("requests %q", got)
	}
	if strings.Contains(r.stdout, "ready") {
		t.Errorf("stdout %q lists a ready worker", r.stdout)
	}
	r = oxide(t, "", "workers", "list", "-o", "json").must(t, 0)
	var ws []sdk.Worker
	if err := json.Unmarshal([]byte(r.stdout), &ws); err != nil || len(ws) != 2 || ws[0].Handle != "c0ffee" || ws[1].State != sdk.WorkerFailed {
		t.Errorf("json output %q (%v)", r.stdout, err)
	}
	r = oxide(t, "", "workers", "list", "--state", "lost").must(t, 1)
	has(t, "stderr", r.stderr, `state "lost" is not one of .* \(invalid_request\)`)

	r = oxide(t, "", "workers", "providers").must(t, 0)
	has(t, "stdout", r.stdout, `^NAME\s+HEALTHY\s+CPUS\s+MEMORY\s+RUNNING\s+WORKERS\s+ERROR\ndocker\s+true\s+8\s+16\.0Gi\s+1\s+1 ready, 1 failed\s+-\nk8s\s+false\s+-\s+-\s+-\s+-\s+cluster unreachable\n$`)
	r = oxide(t, "", "workers", "providers", "-o", "json").must(t, 0)
	var ps []sdk.Provider
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || len(ps) != 2 || ps[0].Capacity.CPUs != 8 || ps[1].Capacity != nil || ps[1].Error != "cluster unreachable" {
		t.Errorf("json output %q (%v)", r.stdout, err)
	}
}
