package agent

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// hostStats measures the machine for heartbeats: CPU use since the last
// sample (/proc/stat), memory (/proc/meminfo), free disk space of the data
// directory (statfs). What it cannot read is zero.
type hostStats struct {
	dir string

	mu              sync.Mutex
	lastTotal, last uint64 // CPU jiffies: all, and idle
}

func newHostStats(dir string) *hostStats {
	h := &hostStats{dir: dir}
	h.cpuPercent()
	return h
}

// cpuPercent returns the share of CPU time not idle since the last call.
func (h *hostStats) cpuPercent() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var total, idle uint64
	for i, s := range f[1:] {
		if i >= 8 { // guest time is counted in user already
			break
		}
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	prevTotal, prevIdle := h.lastTotal, h.last
	h.lastTotal, h.last = total, idle
	if total <= prevTotal || idle < prevIdle || idle-prevIdle > total-prevTotal {
		return 0
	}
	dt, di := total-prevTotal, idle-prevIdle
	return 100 * float64(dt-di) / float64(dt)
}

// memory returns the bytes of memory in use (total less available) and
// the total.
func memory() (used, total int64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	var avail int64 = -1
	sc := bufio.NewScanner(f)
	for sc.Scan() && (total == 0 || avail < 0) {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n * 1024
		case "MemAvailable":
			avail = n * 1024
		}
	}
	if avail < 0 || avail > total {
		return 0, total
	}
	return total - avail, total
}

// diskFree returns the bytes available to the agent on dir's filesystem.
func diskFree(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}
