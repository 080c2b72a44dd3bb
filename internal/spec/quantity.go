package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseCPU reads a CPU quantity: "2", "0.5" or "500m" cores.
func ParseCPU(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	if m, ok := strings.CutSuffix(s, "m"); ok {
		v, err := strconv.ParseFloat(m, 64)
		return v / 1000, err
	}
	return strconv.ParseFloat(s, 64)
}

// ParseMemory reads a memory quantity in bytes: "512Mi", "4Gi", "1G",
// "100M", "2048Ki" or a plain number of bytes.
func ParseMemory(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		factor int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil {
				return 0, fmt.Errorf("memory %q: %w", s, err)
			}
			return int64(v * float64(u.factor)), nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory %q: want a number with Ki, Mi, Gi, K, M or G", s)
	}
	return v, nil
}
