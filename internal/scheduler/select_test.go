package scheduler

import "testing"

func TestSelector(t *testing.T) {
	t.Parallel()
	const gib = 1 << 30
	agents := []Candidate{
		{ID: "c", Labels: []string{"linux", "docker"}, Capacity: 4, Running: 1, CPU: 8, Memory: 16 * gib},
		{ID: "a", Labels: []string{"linux"}, Capacity: 2, Running: 1, CPU: 2, Memory: 4 * gib},
		{ID: "b", Labels: []string{"linux", "docker"}, Capacity: 2, Running: 0, CPU: 4, Memory: 8 * gib},
		{ID: "full", Labels: []string{"linux", "docker"}, Capacity: 1, Running: 1, CPU: 64, Memory: 64 * gib},
	}
	tests := []struct {
		strategy Strategy
		need     Need
		want     []string // picks of successive calls
	}{
		{RoundRobin, Need{Labels: []string{"linux"}}, []string{"a", "b", "c", "a"}},
		{RoundRobin, Need{Labels: []string{"docker"}}, []string{"b", "c", "b"}},
		{LeastLoaded, Need{Labels: []string{"linux"}}, []string{"b", "b"}},
		{LeastLoaded, Need{Labels: []string{"linux"}, CPU: 5}, []string{"c"}},
		{ResourceAware, Need{CPU: 1, Memory: gib}, []string{"a"}},
		{ResourceAware, Need{CPU: 3, Memory: 6 * gib}, []string{"b"}},
		{ResourceAware, Need{CPU: 6}, []string{"c"}},
	}
	for _, tt := range tests {
		s := NewSelector(tt.strategy)
		for i, want := range tt.want {
			if got, ok := s.Pick(tt.need, agents); !ok || got != want {
				t.Errorf("%s %+v pick %d: %q, %v; want %q", tt.strategy, tt.need, i+1, got, ok, want)
			}
		}
	}
	if _, ok := NewSelector(LeastLoaded).Pick(Need{Labels: []string{"gpu"}}, agents); ok {
		t.Error("picked an agent without the label")
	}
	if _, ok := NewSelector(RoundRobin).Pick(Need{CPU: 100}, agents); ok {
		t.Error("picked an agent without room")
	}
}

func TestParseQuantities(t *testing.T) {
	t.Parallel()
	if _, err := ParseStrategy("random"); err == nil {
		t.Error("ParseStrategy(random): no error")
	}
}
