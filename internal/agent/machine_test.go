package agent

import (
	"runtime"
	"testing"
)

func TestMeasure(t *testing.T) {
	t.Parallel()
	m, err := measure(Config{})
	if err != nil || m.cpuMillis != int64(runtime.NumCPU())*1000 || m.gpus < 0 {
		t.Errorf("the host: %+v, %v", m, err)
	}
	if runtime.GOOS == "linux" && m.memory <= 0 {
		t.Errorf("the host's memory: %d", m.memory)
	}
	m, err = measure(Config{CPUs: "1500m", Memory: "2Gi", GPUs: "4"})
	if err != nil || m != (machine{cpuMillis: 1500, memory: 2 << 30, gpus: 4}) {
		t.Errorf("overridden: %+v, %v", m, err)
	}
	if m, err := measure(Config{CPUs: "0", GPUs: "0"}); err != nil || m.cpuMillis != 0 || m.gpus != 0 {
		t.Errorf("zero: %+v, %v", m, err)
	}
	for _, bad := range []Config{{CPUs: "lots"}, {CPUs: "-1"}, {Memory: "2 GB"}, {GPUs: "-1"}, {GPUs: "one"}} {
		if _, err := measure(bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
