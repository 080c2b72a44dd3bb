package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
)

// Strategy is how a Placer chooses among the agents that can take a job
// now.
type Strategy string

// Strategies.
const (
	// RoundRobin takes the fitting agents in turn, by ID.
	RoundRobin Strategy = "round-robin"
	// LeastLoaded takes the agent with the smallest share of its job slots
	// in use.
	LeastLoaded Strategy = "least-loaded"
	// BestFit takes the agent left with the least free once the job is on
	// it, keeping large agents for large jobs: fewest GPUs left, then
	// fewest CPUs, then least memory; ties go to the least loaded. The
	// default.
	BestFit Strategy = "best-fit"
)

// Strategies lists the strategies, the default first.
var Strategies = []Strategy{BestFit, LeastLoaded, RoundRobin}

// ParseStrategy checks a strategy's name; empty is the default, BestFit.
func ParseStrategy(s string) (Strategy, error) {
	if s == "" {
		return BestFit, nil
	}
	if st := Strategy(s); slices.Contains(Strategies, st) {
		return st, nil
	}
	return "", fmt.Errorf("unknown placement %q: want best-fit, least-loaded or round-robin", s)
}

// Resources are quantities of a machine: what an agent has, or what a job
// needs.
type Resources struct {
	CPUMillis int64 // CPUs, in thousandths
	Memory    int64 // bytes
	GPUs      int
}

func (r Resources) minus(o Resources) Resources {
	return Resources{r.CPUMillis - o.CPUMillis, r.Memory - o.Memory, r.GPUs - o.GPUs}
}

// Plus returns r with o added.
func (r Resources) Plus(o Resources) Resources {
	return Resources{r.CPUMillis + o.CPUMillis, r.Memory + o.Memory, r.GPUs + o.GPUs}
}

// Need is what a job asks of its agent.
type Need struct {
	Resources
	Labels   []string // the agent has them all
	OS, Arch string   // empty: any
}

// Candidate is a connected agent as placement sees it.
type Candidate struct {
	ID       string
	Labels   []string
	OS, Arch string
	Slots    int // jobs it runs at once
	Running  int // jobs it runs now
	// Total is the machine it reported; a CPUMillis or Memory of 0 is
	// unknown, and never short. Used is what its running jobs asked for.
	Total, Used Resources
}

// could reports whether c could take a job needing n were it idle.
func (c Candidate) could(n Need) bool {
	return c.Slots > 0 && c.has(n) && room(c.Total, Resources{}, n.Resources)
}

// fits reports whether c can take a job needing n now.
func (c Candidate) fits(n Need) bool {
	return c.Running < c.Slots && c.has(n) && room(c.Total, c.Used, n.Resources)
}

// left is what c has free once a job needing n is on it; an unknown CPU
// or memory counts as the most.
func (c Candidate) left(n Need) Resources {
	l := c.Total.minus(c.Used).minus(n.Resources)
	if c.Total.CPUMillis == 0 {
		l.CPUMillis = math.MaxInt64
	}
	if c.Total.Memory == 0 {
		l.Memory = math.MaxInt64
	}
	return l
}

// has reports whether c has n's labels, OS and arch.
func (c Candidate) has(n Need) bool {
	for _, l := range n.Labels {
		if !slices.Contains(c.Labels, l) {
			return false
		}
	}
	return (n.OS == "" || n.OS == c.OS) && (n.Arch == "" || n.Arch == c.Arch)
}

// room reports whether a machine of total, with used taken, has room for
// need. A total CPU or memory of 0 is unknown, and not checked.
func room(total, used, need Resources) bool {
	return (need.CPUMillis == 0 || total.CPUMillis == 0 || total.CPUMillis-used.CPUMillis >= need.CPUMillis) &&
		(need.Memory == 0 || total.Memory == 0 || total.Memory-used.Memory >= need.Memory) &&
		total.GPUs-used.GPUs >= need.GPUs
}

// Placement is where a job goes.
type Placement struct {
	Agent string // the agent that takes it; empty: none can now
	// Why none can, when Agent is empty: "needs 4 GPUs; the largest agent
	// has 0", or "every fitting agent is busy".
	Why string
	// Never is set when no candidate could take the job even idle: it
	// waits for an agent that fits to connect.
	Never bool
}

// Placer places jobs on agents with a strategy. It is safe for concurrent
// use.
type Placer struct {
	strategy Strategy
	mu       sync.Mutex
	last     string // round-robin: the agent chosen last
}

// NewPlacer returns a Placer with the given strategy.
func NewPlacer(s Strategy) *Placer { return &Placer{strategy: s} }

// Strategy returns p's strategy.
func (p *Placer) Strategy() Strategy { return p.strategy }

// Place chooses the candidate that takes a job needing n. Candidates are
// considered in ID order, so that ties and turns do not depend on the
// order they come in.
func (p *Placer) Place(n Need, cs []Candidate) Placement {
	var fit []Candidate
	for _, c := range cs {
		if c.fits(n) {
			fit = append(fit, c)
		}
	}
	if len(fit) == 0 {
		why, never := Unplaceable(n, cs)
		return Placement{Why: why, Never: never}
	}
	slices.SortFunc(fit, func(a, b Candidate) int { return strings.Compare(a.ID, b.ID) })
	load := func(a, b Candidate) int { return cmp.Compare(a.Running*b.Slots, b.Running*a.Slots) } // a.Running/a.Slots vs b's
	var best Candidate
	switch p.strategy {
	case LeastLoaded:
		best = slices.MinFunc(fit, load)
	case RoundRobin:
		p.mu.Lock()
		defer p.mu.Unlock()
		best = fit[0]
		if i := slices.IndexFunc(fit, func(c Candidate) bool { return c.ID > p.last }); i >= 0 {
			best = fit[i]
		}
		p.last = best.ID
	default: // best fit
		best = slices.MinFunc(fit, func(a, b Candidate) int {
			la, lb := a.left(n), b.left(n)
			return cmp.Or(cmp.Compare(la.GPUs, lb.GPUs), cmp.Compare(la.CPUMillis, lb.CPUMillis), cmp.Compare(la.Memory, lb.Memory), load(a, b))
		})
	}
	return Placement{Agent: best.ID}
}

// Unplaceable says why no candidate can take a job needing n now, and
// whether none ever could: the first of labels, OS, arch, GPUs, CPUs and
// memory that no candidate left by the ones before has enough of.
func Unplaceable(n Need, cs []Candidate) (why string, never bool) {
	if slices.ContainsFunc(cs, func(c Candidate) bool { return c.could(n) }) {
		return "every agent that fits is busy", false
	}
	if len(cs) == 0 {
		return "no agent is connected", true
	}
	left := cs
	keep := func(ok func(Candidate) bool) bool {
		var next []Candidate
		for _, c := range left {
			if ok(c) {
				next = append(next, c)
			}
		}
		if len(next) == 0 {
			return false
		}
		left = next
		return true
	}
	most := func(f func(Candidate) int64) int64 {
		return f(slices.MaxFunc(left, func(a, b Candidate) int { return cmp.Compare(f(a), f(b)) }))
	}
	switch {
	case !keep(func(c Candidate) bool { return c.Slots > 0 }):
		return "every agent takes 0 jobs", true
	case !keep(func(c Candidate) bool { return c.has(Need{Labels: n.Labels}) }):
		return fmt.Sprintf("needs labels %s; no agent has them all", strings.Join(n.Labels, ", ")), true
	case !keep(func(c Candidate) bool { return c.has(Need{OS: n.OS}) }):
		return fmt.Sprintf("needs OS %s; no agent with its labels runs it", n.OS), true
	case !keep(func(c Candidate) bool { return c.has(Need{Arch: n.Arch}) }):
		return fmt.Sprintf("needs arch %s; no agent with its labels and OS has it", n.Arch), true
	case !keep(func(c Candidate) bool { return c.Total.GPUs >= n.GPUs }):
		return fmt.Sprintf("needs %d GPUs; the largest agent has %d", n.GPUs, most(func(c Candidate) int64 { return int64(c.Total.GPUs) })), true
	case !keep(func(c Candidate) bool { return c.Total.CPUMillis == 0 || c.Total.CPUMillis >= n.CPUMillis }):
		return fmt.Sprintf("needs %s CPUs; the largest agent has %s", cpus(n.CPUMillis), cpus(most(func(c Candidate) int64 { return c.Total.CPUMillis }))), true
	default:
		return fmt.Sprintf("needs %s of memory; the largest agent has %s", bytes(n.Memory), bytes(most(func(c Candidate) int64 { return c.Total.Memory }))), true
	}
}

// cpus formats millicores as cores: "2", "0.5".
func cpus(m int64) string { return strings.TrimSuffix(fmt.Sprintf("%g", float64(m)/1000), ".0") }

// bytes formats a size in binary units: "900Gi", "1.5Mi", "512".
func bytes(b int64) string {
	units := []string{"Ki", "Mi", "Gi", "Ti"}
	v, u := float64(b), ""
	for i := 0; i < len(units) && v >= 1024; i++ {
		v, u = v/1024, units[i]
	}
	return fmt.Sprintf("%.4g%s", v, u)
}
