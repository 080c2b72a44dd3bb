package scheduler_test

import (
	"testing"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/store"
)

// TestNeeds: a submitted job needs its spec's resources, a run's job its
// stage container's; Waiting lists the queue with them, and Take claims a
// job once.
func TestNeeds(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	ctx := t.Context()
	j, err := b.svc.SubmitJob(ctx, jobspec.Spec{Name: "big", Command: "true", Labels: []string{"linux"}, Priority: 1,
		Resources: &jobspec.Resources{CPU: "1500m", Memory: "900Gi", GPU: 4, Arch: "s390x", OS: "linux"}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := scheduler.Need{Resources: scheduler.Resources{CPUMillis: 1500, Memory: 900 << 30, GPUs: 4},
		Labels: []string{"linux"}, Arch: "s390x", OS: "linux"}
	if got := b.svc.Need(ctx, j); !equalNeed(got, want) {
		t.Errorf("submitted job needs %+v, want %+v", got, want)
	}
	b.trigger(t, `version: "1"
name: p
stages:
  - name: build
    agent: {labels: [docker]}
    environment:
      type: container
      container: {image: "alpine", resources: {cpu: "2", memory: 512Mi, gpu: {count: 1}}}
    steps: [{name: s, run: "true"}]
`, scheduler.TriggerRequest{Branch: "main"})
	var ws []scheduler.Waiting
	for range 100 {
		if ws, err = b.svc.Waiting(ctx, 10, 0); err != nil {
			t.Fatal(err)
		}
		if len(ws) == 2 {
			break
		}
	}
	if len(ws) != 2 || ws[0].Job.ID != j.ID {
		t.Fatalf("waiting %+v", ws)
	}
	want = scheduler.Need{Resources: scheduler.Resources{CPUMillis: 2000, Memory: 512 << 20, GPUs: 1}, Labels: []string{"docker"}}
	if got := ws[1].Need; !equalNeed(got, want) {
		t.Errorf("stage needs %+v, want %+v", got, want)
	}
	reason := func(want string) {
		t.Helper()
		if got, err := b.svc.WaitingReason(ctx, j); got != want || err != nil {
			t.Errorf("waiting reason %q, %v; want %q", got, err, want)
		}
	}
	reason("no agent is connected")
	if _, err := b.store.Agents().Register(ctx, store.Agent{ID: "agent-1", Name: "small", Labels: []string{"linux"},
		OS: "linux", Arch: "amd64", CPUMillis: 2000, MemoryBytes: 8 << 30}); err != nil {
		t.Fatal(err)
	}
	reason("needs arch s390x; no agent with its labels and OS has it")
	if _, err := b.store.Agents().Register(ctx, store.Agent{ID: "agent-2", Name: "mainframe", Labels: []string{"linux"},
		OS: "linux", Arch: "s390x", CPUMillis: 64000, MemoryBytes: 1 << 40, GPUs: 2}); err != nil {
		t.Fatal(err)
	}
	reason("needs 4 GPUs; the largest agent has 2")
	a, ok, err := b.svc.Take(ctx, j.ID, "agent-1")
	if err != nil || !ok || a.Lease.JobID != j.ID || a.Lease.WorkerID != "agent-1" || len(a.Job.Steps) != 1 {
		t.Fatalf("take: %+v, %v, %v", a, ok, err)
	}
	if _, ok, err := b.svc.Take(ctx, j.ID, "agent-2"); ok || err != nil {
		t.Errorf("taken twice: %v, %v", ok, err)
	}
	got, _ := b.store.Jobs().Get(ctx, j.ID)
	if got.State != store.JobAssigned {
		t.Errorf("taken job is %s", got.State)
	}
	if r, err := b.svc.WaitingReason(ctx, got); r != "" || err != nil {
		t.Errorf("an assigned job waits: %q, %v", r, err)
	}
}

func equalNeed(a, b scheduler.Need) bool {
	return a.Resources == b.Resources && a.OS == b.OS && a.Arch == b.Arch && len(a.Labels) == len(b.Labels) &&
		(len(a.Labels) == 0 || a.Labels[0] == b.Labels[0])
}
