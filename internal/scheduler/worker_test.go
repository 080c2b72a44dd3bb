package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/oxide-ci/oxide/internal/scheduler"
	"github.com/oxide-ci/oxide/internal/worker"
)

// runWorker is a worker in the tests' process: it claims up to slots jobs
// from svc (woken when jobs are queued, or every poll), runs each with w,
// and renews its leases every second, cancelling a job whose lease the
// scheduler took back, until ctx is done.
func runWorker(ctx context.Context, svc *scheduler.Service, w *worker.Worker, slots int, poll time.Duration) {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		running = map[string]context.CancelCauseFunc{}
	)
	defer wg.Wait()
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	for {
		queued := svc.Queued()
		mu.Lock()
		free := slots - len(running)
		mu.Unlock()
		if free > 0 {
			as, _ := svc.Claim(ctx, w.ID, nil, free)
			for _, a := range as {
				jctx, cancel := context.WithCancelCause(ctx)
				mu.Lock()
				running[a.Lease.JobID] = cancel
				mu.Unlock()
				wg.Go(func() {
					w.Execute(jctx, a)
					cancel(nil)
					mu.Lock()
					delete(running, a.Lease.JobID)
					mu.Unlock()
				})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-queued:
		case <-time.After(poll):
		case <-beat.C:
			held, err := svc.Heartbeat(ctx, w.ID)
			if err != nil {
				continue
			}
			mu.Lock()
			for id, cancel := range running {
				if !slices.Contains(held, id) {
					cancel(fmt.Errorf("%w: the lease was taken back", worker.ErrCancelled))
				}
			}
			mu.Unlock()
		}
	}
}
