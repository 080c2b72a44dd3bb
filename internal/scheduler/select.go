package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Strategy is how a Selector picks among the agents that can take a job.
type Strategy string

// Strategies of the Hodei seed.
const (
	// RoundRobin takes eligible agents in turn.
	RoundRobin Strategy = "round-robin"
	// LeastLoaded takes the agent with the smallest share of its capacity
	// in use.
	LeastLoaded Strategy = "least-loaded"
	// ResourceAware takes the agent that is left with the least room once
	// the job's CPU and memory are placed on it (best fit), keeping large
	// agents free for large jobs.
	ResourceAware Strategy = "resource-aware"
)

// ParseStrategy checks a strategy's name.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case RoundRobin, LeastLoaded, ResourceAware:
		return st, nil
	}
	return "", fmt.Errorf("unknown agent selection strategy %q: want round-robin, least-loaded or resource-aware", s)
}

// Candidate is an agent as selection sees it.
type Candidate struct {
	ID       string
	Labels   []string
	Capacity int     // jobs it runs at once
	Running  int     // jobs it runs now
	CPU      float64 // free cores
	Memory   int64   // free bytes
}

// Need is what a job asks of its agent.
type Need struct {
	Labels []string
	CPU    float64 // cores; 0: any
	Memory int64   // bytes; 0: any
}

// fits reports whether c can take a job that needs n.
func (c Candidate) fits(n Need) bool {
	if c.Running >= c.Capacity || c.CPU < n.CPU || c.Memory < n.Memory {
		return false
	}
	for _, l := range n.Labels {
		if !slices.Contains(c.Labels, l) {
			return false
		}
	}
	return true
}

// Selector picks an agent for a job. It is safe for concurrent use.
type Selector struct {
	strategy Strategy
	mu       sync.Mutex
	last     string // round-robin: the agent picked last
}

// NewSelector returns a Selector with the given strategy.
func NewSelector(s Strategy) *Selector { return &Selector{strategy: s} }

// Pick returns the ID of the agent that takes a job needing n, or false
// when no candidate fits. Candidates are considered in ID order, so that
// ties and turns do not depend on the order they are passed in.
func (s *Selector) Pick(n Need, candidates []Candidate) (string, bool) {
	var fit []Candidate
	for _, c := range candidates {
		if c.fits(n) {
			fit = append(fit, c)
		}
	}
	if len(fit) == 0 {
		return "", false
	}
	slices.SortFunc(fit, func(a, b Candidate) int { return strings.Compare(a.ID, b.ID) })
	best := fit[0]
	switch s.strategy {
	case LeastLoaded:
		for _, c := range fit[1:] {
			if c.Running*best.Capacity < best.Running*c.Capacity { // c.Running/c.Capacity < best's
				best = c
			}
		}
	case ResourceAware:
		left := func(c Candidate) float64 {
			return (c.CPU - n.CPU) + float64(c.Memory-n.Memory)/(1<<30) // a core weighs as 1 GiB
		}
		for _, c := range fit[1:] {
			if left(c) < left(best) {
				best = c
			}
		}
	default: // round-robin: the first ID after the last one picked
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range fit {
			if c.ID > s.last {
				best = c
				break
			}
		}
		s.last = best.ID
	}
	return best.ID, true
}
