package agent

import (
	"log/slog"
	"testing"
	"time"
)

// TestLockDataDir: a second agent on a data directory waits until the
// first releases it.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	release, err := lockDataDir(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan func(), 1)
	go func() {
		r, err := lockDataDir(dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Error(err)
			r = func() {}
		}
		second <- r
	}()
	select {
	case <-second:
		t.Fatal("the second agent took the data directory while the first held it")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case r := <-second:
		r()
	case <-time.After(10 * time.Second):
		t.Fatal("the second agent did not get the data directory once the first released it")
	}
}
