//go:build !linux

package agent

// hostStats measures the machine for heartbeats; on this system it
// reports zeros.
type hostStats struct{ dir string }

func newHostStats(dir string) *hostStats { return &hostStats{dir: dir} }

func (h *hostStats) cpuPercent() float64 { return 0 }

func memory() (used, total int64) { return 0, 0 }

func diskFree(dir string) int64 { return 0 }
