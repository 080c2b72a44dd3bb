package server

import (
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/testkit"
)

// TestSubmitJobsBatch: a batch submitted through POST /jobs:batch is
// queued by the real scheduler and run to success by the own agent.
func TestSubmitJobsBatch(t *testing.T) {
	s := startServer(t, testConfig(t))
	jobs := make([]map[string]any, 5)
	for i := range jobs {
		jobs[i] = map[string]any{"name": "batch", "command": "echo batched"}
	}
	var page struct{ Items []struct{ ID, State string } }
	s.call(t, "POST", "/api/v1/jobs:batch", s.Token, map[string]any{"jobs": jobs}).want(t, 201, &page)
	if len(page.Items) != len(jobs) {
		t.Fatalf("%d jobs queued, want %d", len(page.Items), len(jobs))
	}
	for _, j := range page.Items {
		testkit.Until(t, 30*time.Second, func() (bool, string) {
			s.call(t, "GET", "/api/v1/jobs/"+j.ID, s.Token, nil).want(t, 200, &j)
			return j.State == "succeeded", "job " + j.State
		})
	}
}
