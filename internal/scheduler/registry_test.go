package scheduler_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
	"github.com/oxide-ci/oxide/internal/store/sqlite"
)

// secretsOf resolves references from a map, as the server's store does.
type secretsOf map[string]string

func (m secretsOf) Resolve(_ context.Context, _ string, ref spec.SecretRef) (string, bool, error) {
	v, ok := m[ref.Name]
	return v, ok, nil
}

const privateImage = `
version: "1"
name: private
stages:
  - name: build
    environment:
      type: container
      container:
        image: registry.example:5000/team/builder:1
        registry:
          url: registry.example:5000
          username: ci
          password_secret: REGISTRY_PASSWORD
    steps:
      - name: hi
        run: echo hi
`

// TestRegistryPassword: a claimed job that pulls from a registry carries
// the password of registry.password_secret, masked in its output but not
// in its steps' environment; without the secret it fails before it runs.
func TestRegistryPassword(t *testing.T) {
	ctx := t.Context()
	for _, c := range []struct {
		name    string
		secrets secretsOf
	}{{"resolved", secretsOf{"REGISTRY_PASSWORD": "hunter2"}}, {"missing", secretsOf{}}} {
		t.Run(c.name, func(t *testing.T) {
			st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "oxide.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			svc := scheduler.New(scheduler.Config{Store: st, Secrets: c.secrets, Lease: time.Minute})
			p, err := st.Pipelines().Create(ctx, store.Pipeline{Name: "private", Definition: privateImage})
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.TriggerRun(ctx, p.ID, scheduler.TriggerRequest{})
			if err != nil {
				t.Fatal(err)
			}
			as, err := svc.Claim(ctx, "w1", nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			if c.secrets["REGISTRY_PASSWORD"] == "" {
				jobs, _ := st.Jobs().List(ctx, store.JobFilter{RunID: r.ID})
				if len(as) != 0 || len(jobs) != 1 || jobs[0].State != store.JobFailed || !strings.Contains(jobs[0].Error, "REGISTRY_PASSWORD") {
					t.Fatalf("claimed %d, jobs %+v: want the job failed for its missing registry password", len(as), jobs)
				}
				return
			}
			if len(as) != 1 || as[0].RegistryPassword != "hunter2" {
				t.Fatalf("assignments %+v: want one with the registry password", as)
			}
			masked := false
			for _, s := range as[0].Job.Secrets {
				if s.Value == "hunter2" {
					masked = s.Masked && s.Name == ""
				}
			}
			if !masked {
				t.Errorf("secrets %+v: want the password masked, in no variable", as[0].Job.Secrets)
			}
		})
	}
}
