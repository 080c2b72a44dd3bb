package spec

import "testing"

func TestParseQuantities(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]float64{"2": 2, "500m": 0.5, "0.25": 0.25, "": 0} {
		if got, err := ParseCPU(in); err != nil || got != want {
			t.Errorf("ParseCPU(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"512Mi": 512 << 20, "4Gi": 4 << 30, "1G": 1e9, "100": 100, "1.5Gi": 3 << 29} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseMemory("lots"); err == nil {
		t.Error("ParseMemory(lots): no error")
	}
}
