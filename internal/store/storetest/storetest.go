// Package storetest is the conformance suite that every store driver must
// pass: a driver's test calls Run with a way to make fresh databases.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

// OpenFunc opens a new, independent Store on one database: its own
// connections, as another server process would have. It registers Close
// with t.Cleanup. It may be called from several goroutines at once.
type OpenFunc func(t *testing.T) (store.Store, error)

// Run runs the suite, each test in parallel on a database of its own that
// newDB makes (empty, not migrated; cleaned up with t).
func Run(t *testing.T, newDB func(t *testing.T) OpenFunc) {
	tests := map[string]func(t *testing.T, open OpenFunc){
		"Pipelines":          testPipelines,
		"Runs":               testRuns,
		"RunNumbers":         testRunNumbers,
		"RunLock":            testRunLock,
		"StagesAndSteps":     testStagesAndSteps,
		"Templates":          testTemplates,
		"Tokens":             testTokens,
		"BootstrapTokens":    testBootstrapTokens,
		"BootstrapTokenRace": testBootstrapTokenRace,
		"ClaimOrder":         testClaimOrder,
		"ClaimLabels":        testClaimLabels,
		"Take":               testTake,
		"JobLifecycle":       testJobLifecycle,
		"LeaseExpiry":        testLeaseExpiry,
		"Fail":               testFail,
		"Logs":               testLogs,
		"LogsResend":         testLogsResend,
		"LogsAttempts":       testLogsAttempts,
		"LogsRandom":         testLogsRandom,
		"LogsLarge":          testLogsLarge,
		"LogsTx":             testLogsTx,
		"LogsConcurrent":     testLogsConcurrent,
		"Agents":             testAgents,
		"Workers":            testWorkers,
		"Leases":             testLeases,
		"Approvals":          testApprovals,
		"Secrets":            testSecrets,
		"Cache":              testCache,
		"Audit":              testAudit,
		"OutboxAtomic":       testOutboxAtomic,
		"OutboxRelay":        testOutboxRelay,
		"ConcurrentOpen":     testConcurrentOpen,
		"TwoServersClaim10k": testTwoServersClaim,
	}
	names := make([]string, 0, len(tests))
	for name := range tests {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tests[name](t, newDB(t))
		})
	}
}

// openStore opens a Store or fails the test.
func openStore(t *testing.T, open OpenFunc) store.Store {
	t.Helper()
	st, err := open(t)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return st
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func equal[T any](t *testing.T, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("\ngot  %s\nwant %s", dump(got), dump(want))
	}
}

func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eventTypes returns the types of the pending events about one aggregate, in
// order.
func eventTypes(t *testing.T, st store.Store, aggregateID string) []string {
	t.Helper()
	var types []string
	for _, e := range pending(t, st) {
		if e.AggregateID == aggregateID {
			types = append(types, e.Type)
		}
	}
	return types
}

func pending(t *testing.T, st store.Store) []store.Event {
	t.Helper()
	evs, err := st.Outbox().Pending(context.Background(), 0)
	noErr(t, err)
	return evs
}

// lastPayload decodes the payload of the last pending event of type typ
// about aggregateID into v.
func lastPayload(t *testing.T, st store.Store, aggregateID, typ string, v any) {
	t.Helper()
	evs := pending(t, st)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].AggregateID == aggregateID && evs[i].Type == typ {
			noErr(t, json.Unmarshal(evs[i].Payload, v))
			return
		}
	}
	t.Fatalf("no %s event about %s", typ, aggregateID)
}

// fresh reports whether tm is a plausible "now" stamp: UTC, microseconds,
// within a minute of the test's clock.
func fresh(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if tm.Location() != time.UTC || tm.Nanosecond()%1000 != 0 || time.Since(tm).Abs() > time.Minute {
		t.Fatalf("%s = %v, want now in UTC with microseconds", what, tm)
	}
}

func ptr[T any](v T) *T { return &v }
