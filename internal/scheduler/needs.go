package scheduler

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/oxide-ci/oxide/internal/jobspec"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// Waiting is a queued job with what it needs of its agent.
type Waiting struct {
	Job  store.Job
	Need Need
}

// Waiting returns up to limit of the jobs that agents may take now, in
// the queue's order after the first offset, with their needs.
func (s *Service) Waiting(ctx context.Context, limit, offset int) ([]Waiting, error) {
	jobs, err := s.store.Jobs().Claimable(ctx, limit, offset)
	if err != nil {
		return nil, err
	}
	out := make([]Waiting, len(jobs))
	for i, j := range jobs {
		out[i] = Waiting{Job: j, Need: s.Need(ctx, j)}
	}
	if offset == 0 && len(jobs) < limit { // the whole queue: forget the needs of jobs gone
		s.needs.keep(jobs)
	}
	return out, nil
}

// Need returns what job j asks of its agent: its labels, and the resources
// of its spec (a submitted job) or of its stage's container (a run's job).
// A job whose spec or run cannot be read needs only its labels: it fails
// when it is taken.
func (s *Service) Need(ctx context.Context, j store.Job) Need {
	if n, ok := s.needs.get(j.ID); ok {
		return n
	}
	n, err := s.need(ctx, j)
	if err != nil {
		s.log.Warn("read a job's resources", "job_id", j.ID, "err", err)
	}
	n.Labels = j.Labels
	s.needs.put(j.ID, n)
	return n
}

func (s *Service) need(ctx context.Context, j store.Job) (Need, error) {
	if j.RunID == "" {
		js, err := jobspec.Decode(j.Spec)
		if err != nil || js.Resources == nil {
			return Need{}, err
		}
		r := js.Resources
		n := Need{OS: r.OS, Arch: r.Arch}
		n.Resources, err = resources(r.CPU, r.Memory, r.GPU)
		return n, err
	}
	run, err := s.store.Runs().Get(ctx, j.RunID)
	if err != nil {
		return Need{}, err
	}
	c, err := s.compiled(run)
	if err != nil {
		return Need{}, err
	}
	sg, err := s.store.Stages().Get(ctx, j.StageID)
	if err != nil {
		return Need{}, err
	}
	if sg.Index < 0 || sg.Index >= len(c.Nodes) {
		return Need{}, fmt.Errorf("run %s has no stage %d", j.RunID, sg.Index)
	}
	e := c.Nodes[sg.Index].Job.Environment
	if e == nil || e.Container == nil || e.Container.Resources == nil {
		return Need{}, nil
	}
	r := e.Container.Resources
	gpus := 0
	if r.GPU != nil {
		gpus = r.GPU.Count
	}
	res, err := resources(r.CPU, r.Memory, gpus)
	return Need{Resources: res}, err
}

// resources reads the quantities of a job's spec.
func resources(cpu, memory string, gpus int) (Resources, error) {
	c, err := spec.ParseCPU(cpu)
	if err != nil {
		return Resources{}, fmt.Errorf("cpu %q: %w", cpu, err)
	}
	m, err := spec.ParseMemory(memory)
	if err != nil {
		return Resources{}, err
	}
	return Resources{CPUMillis: int64(math.Ceil(c * 1000)), Memory: m, GPUs: gpus}, nil
}

// needCache keeps the needs of queued jobs, which placement reads again
// on every round.
type needCache struct {
	mu sync.Mutex
	m  map[string]Need
}

func (c *needCache) get(id string) (Need, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[id]
	return n, ok
}

func (c *needCache) put(id string, n Need) {
	c.mu.Lock()
	c.m[id] = n
	c.mu.Unlock()
}

func (c *needCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// keep forgets every job but jobs.
func (c *needCache) keep(jobs []store.Job) {
	ids := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		ids[j.ID] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.m {
		if !ids[id] {
			delete(c.m, id)
		}
	}
}

// WaitingReason says why queued job j waits when no connected agent
// (online or busy) could ever take it, even idle: "needs 4 GPUs; the
// largest agent has 0", or "no agent is connected". It is empty when one
// could, or j is not queued.
func (s *Service) WaitingReason(ctx context.Context, j store.Job) (string, error) {
	if j.State != store.JobQueued {
		return "", nil
	}
	agents, err := s.store.Agents().List(ctx)
	if err != nil {
		return "", err
	}
	var cs []Candidate
	for _, a := range agents {
		if a.Status == store.AgentOnline || a.Status == store.AgentBusy {
			cs = append(cs, Candidate{ID: a.ID, Labels: a.Labels, OS: a.OS, Arch: a.Arch, Slots: a.Capacity,
				Total: Resources{CPUMillis: a.CPUMillis, Memory: a.MemoryBytes, GPUs: a.GPUs}})
		}
	}
	why, never := Unplaceable(s.Need(ctx, j), cs)
	if !never {
		return "", nil
	}
	return why, nil
}
