package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

func testLeases(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	ls := st.Leases()
	acquire := func(name, holder string, ttl time.Duration, want bool) {
		t.Helper()
		ok, err := ls.Acquire(ctx, name, holder, ttl)
		noErr(t, err)
		if ok != want {
			t.Fatalf("Acquire(%s, %s) = %v, want %v", name, holder, ok, want)
		}
	}

	// Free, renewed by its holder, refused to another while unexpired.
	acquire("autoscaler", "server-1", time.Minute, true)
	acquire("autoscaler", "server-1", time.Minute, true)
	acquire("autoscaler", "server-2", time.Minute, false)
	acquire("other", "server-2", time.Minute, true)

	// Taken over once expired; the old holder is then refused.
	acquire("short", "server-1", 50*time.Millisecond, true)
	acquire("short", "server-2", time.Minute, false)
	time.Sleep(100 * time.Millisecond)
	acquire("short", "server-2", time.Minute, true)
	acquire("short", "server-1", time.Minute, false)

	// Released by a non-holder: nothing; by the holder: free.
	noErr(t, ls.Release(ctx, "autoscaler", "server-2"))
	noErr(t, ls.Release(ctx, "no-such-lease", "server-2"))
	acquire("autoscaler", "server-2", time.Minute, false)
	noErr(t, ls.Release(ctx, "autoscaler", "server-1"))
	acquire("autoscaler", "server-2", time.Minute, true)

	for _, c := range []struct {
		name, holder string
		ttl          time.Duration
	}{{"", "server-1", time.Minute}, {"x", "", time.Minute}, {"x", "server-1", 0}, {"x", "server-1", -time.Second}} {
		_, err := ls.Acquire(ctx, c.name, c.holder, c.ttl)
		wantErr(t, err, store.ErrInvalid)
	}

	// No events.
	if evs := pending(t, st); len(evs) != 0 {
		t.Fatalf("events %s", dump(evs))
	}

	leaseRace(t, open)
}

// leaseRace acquires one free lease from 10 goroutines on two Stores (two
// servers), each for a holder of its own: exactly one gets it.
func leaseRace(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	stores := []store.Store{openStore(t, open), openStore(t, open)}
	const n = 10
	var (
		wg    sync.WaitGroup
		got   [n]bool
		errs  [n]error
		start = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = stores[i%2].Leases().Acquire(ctx, "race", fmt.Sprintf("server-%d", i), time.Minute)
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i, err := range errs {
		noErr(t, err)
		if got[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d holders got the lease, want 1", winners)
	}
}
