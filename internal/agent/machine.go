package agent

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/oxide-ci/oxide/internal/spec"
)

// machine is what the agent reports it has for jobs, in its Hello: the
// server places jobs' resources against it.
type machine struct {
	cpuMillis, memory int64
	gpus              int
}

// measure returns the machine: the host's CPUs, memory and GPUs, each
// replaced by the quantity cfg gives ("2" or "500m" CPUs, "16Gi" memory, a
// count of GPUs).
func measure(cfg Config) (machine, error) {
	m := machine{cpuMillis: int64(runtime.NumCPU()) * 1000, gpus: gpus()}
	_, m.memory = memory()
	if cfg.CPUs != "" {
		c, err := spec.ParseCPU(cfg.CPUs)
		if err != nil || c < 0 || math.IsInf(c, 0) || math.IsNaN(c) {
			return m, fmt.Errorf("CPUs %q: want a number of cores (\"2\", \"0.5\") or millicores (\"500m\")", cfg.CPUs)
		}
		m.cpuMillis = int64(math.Round(c * 1000))
	}
	if cfg.Memory != "" {
		b, err := spec.ParseMemory(cfg.Memory)
		if err != nil || b < 0 {
			return m, fmt.Errorf("memory %q: want a size like \"512Mi\" or \"16Gi\"", cfg.Memory)
		}
		m.memory = b
	}
	if cfg.GPUs != "" {
		n, err := strconv.Atoi(cfg.GPUs)
		if err != nil || n < 0 {
			return m, fmt.Errorf("GPUs %q: want a count", cfg.GPUs)
		}
		m.gpus = n
	}
	return m, nil
}

// gpus counts the NVIDIA GPUs the driver lists (/proc/driver/nvidia/gpus),
// else the /dev/nvidiaN devices: 0 when there are none or no driver.
func gpus() int {
	if es, err := os.ReadDir("/proc/driver/nvidia/gpus"); err == nil && len(es) > 0 {
		return len(es)
	}
	devs, _ := filepath.Glob("/dev/nvidia[0-9]*")
	return len(devs)
}
