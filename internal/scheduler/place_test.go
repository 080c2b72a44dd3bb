package scheduler

import "testing"

func TestPlace(t *testing.T) {
	t.Parallel()
	const gib = 1 << 30
	agents := []Candidate{
		{ID: "c", Labels: []string{"linux", "docker"}, Arch: "amd64", Slots: 4, Running: 1,
			Total: Resources{16000, 32 * gib, 0}, Used: Resources{8000, 16 * gib, 0}}, // free 8 CPUs, 16 GiB
		{ID: "a", Labels: []string{"linux"}, Arch: "amd64", Slots: 2, Running: 1,
			Total: Resources{4000, 8 * gib, 0}, Used: Resources{2000, 4 * gib, 0}}, // free 2, 4 GiB
		{ID: "b", Labels: []string{"linux", "docker"}, Arch: "arm64", Slots: 2,
			Total: Resources{4000, 8 * gib, 0}}, // free 4, 8 GiB
		{ID: "gpu", Labels: []string{"linux"}, Arch: "amd64", Slots: 2,
			Total: Resources{8000, 64 * gib, 2}},
		{ID: "full", Labels: []string{"linux", "docker"}, Arch: "amd64", Slots: 1, Running: 1,
			Total: Resources{64000, 256 * gib, 4}, Used: Resources{1000, gib, 0}},
	}
	need := func(cpu int64, mem int64, gpus int, labels ...string) Need {
		return Need{Resources: Resources{cpu, mem, gpus}, Labels: labels}
	}
	tests := []struct {
		name     string
		strategy Strategy
		need     Need
		want     []string // agents of successive placements
	}{
		{"round-robin takes turns", RoundRobin, need(0, 0, 0, "linux"), []string{"a", "b", "c", "gpu", "a"}},
		{"round-robin among labelled", RoundRobin, need(0, 0, 0, "docker"), []string{"b", "c", "b"}},
		{"least-loaded", LeastLoaded, need(0, 0, 0, "linux"), []string{"b", "b"}},
		{"least-loaded among room", LeastLoaded, need(5000, 0, 0), []string{"gpu"}},
		{"best-fit: smallest that fits", BestFit, need(1000, gib, 0), []string{"a"}},
		{"best-fit: CPUs", BestFit, need(3000, 6*gib, 0), []string{"b"}},
		{"best-fit: keeps the GPUs", BestFit, need(6000, 0, 0), []string{"c"}},
		{"best-fit: GPUs", BestFit, need(1000, gib, 1), []string{"gpu"}},
		{"best-fit: ties by load", BestFit, need(0, 0, 0, "docker"), []string{"b"}},
		{"arch", BestFit, Need{Arch: "arm64"}, []string{"b"}},
		{"unknown capacity is not short", BestFit, need(0, 0, 0, "tiny"), []string{"tiny"}},
	}
	tiny := Candidate{ID: "tiny", Labels: []string{"tiny"}, Slots: 1}
	for _, tt := range tests {
		p := NewPlacer(tt.strategy)
		for i, want := range tt.want {
			if got := p.Place(tt.need, append(agents, tiny)); got.Agent != want {
				t.Errorf("%s: placement %d: %+v, want %q", tt.name, i+1, got, want)
			}
		}
	}
	if got := NewPlacer(BestFit).Place(need(1000, 0, 0), []Candidate{{ID: "tiny", Slots: 1, Total: Resources{GPUs: 0}}}); got.Agent != "tiny" {
		t.Errorf("an agent that reported no CPUs: %+v", got)
	}

	waits := []struct {
		name  string
		need  Need
		cs    []Candidate
		why   string
		never bool
	}{
		{"busy", need(0, 0, 0, "docker", "linux"), agents[4:], "every agent that fits is busy", false},
		{"busy: no room now", need(10000, 0, 0), agents[:1], "every agent that fits is busy", false},
		{"none connected", need(0, 0, 0), nil, "no agent is connected", true},
		{"labels", need(0, 0, 0, "windows"), agents, "needs labels windows; no agent has them all", true},
		{"arch", Need{Arch: "s390x", Labels: []string{"linux"}}, agents, "needs arch s390x; no agent with its labels and OS has it", true},
		{"os", Need{OS: "windows"}, agents, "needs OS windows; no agent with its labels runs it", true},
		{"gpus", need(0, 0, 4, "docker"), agents[:3], "needs 4 GPUs; the largest agent has 0", true},
		{"cpus", need(512000, 0, 0), agents, "needs 512 CPUs; the largest agent has 64", true},
		{"half a CPU", need(500, 0, 0), []Candidate{{ID: "x", Slots: 1, Total: Resources{CPUMillis: 250}}}, "needs 0.5 CPUs; the largest agent has 0.25", true},
		{"memory", need(0, 900*gib, 0), agents, "needs 900Gi of memory; the largest agent has 256Gi", true},
		{"the issue's job", Need{Resources: Resources{512000, 900 * gib, 4}, Arch: "s390x"}, agents, "needs arch s390x; no agent with its labels and OS has it", true},
		{"no slots", need(0, 0, 0), []Candidate{{ID: "x"}}, "every agent takes 0 jobs", true},
	}
	for _, tt := range waits {
		got := NewPlacer(BestFit).Place(tt.need, tt.cs)
		if got.Agent != "" || got.Why != tt.why || got.Never != tt.never {
			t.Errorf("%s: %+v, want %q, never %v", tt.name, got, tt.why, tt.never)
		}
	}
}

func TestParseStrategy(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Strategy{"": BestFit, "best-fit": BestFit, "least-loaded": LeastLoaded, "round-robin": RoundRobin} {
		if got, err := ParseStrategy(in); got != want || err != nil {
			t.Errorf("ParseStrategy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseStrategy("random"); err == nil {
		t.Error("ParseStrategy(random): no error")
	}
}
