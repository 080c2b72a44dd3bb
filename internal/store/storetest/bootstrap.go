package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

func testBootstrapTokens(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	st := openStore(t, open)
	bt := st.BootstrapTokens()
	const hash1 = "a1f0c9b8e5d4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8"
	const hash2 = "b2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1"

	tok, err := bt.Create(ctx, store.BootstrapToken{Hash: hash1, Labels: []string{"linux", "docker"}, CreatedBy: "root"}, 10*time.Minute)
	noErr(t, err)
	if tok.ID == "" || tok.Hash != hash1 || tok.CreatedBy != "root" || tok.UsedAt != nil || tok.UsedBy != "" {
		t.Fatalf("created %+v", tok)
	}
	equal(t, tok.Labels, []string{"linux", "docker"})
	fresh(t, "CreatedAt", tok.CreatedAt)
	if got := tok.ExpiresAt.Sub(tok.CreatedAt); got != 10*time.Minute {
		t.Fatalf("ExpiresAt - CreatedAt = %s, want the ttl, 10m", got)
	}
	_, err = bt.Create(ctx, store.BootstrapToken{Hash: hash1}, time.Minute)
	wantErr(t, err, store.ErrConflict)
	_, err = bt.Create(ctx, store.BootstrapToken{}, time.Minute)
	wantErr(t, err, store.ErrInvalid)
	_, err = bt.Create(ctx, store.BootstrapToken{Hash: hash2}, 0)
	wantErr(t, err, store.ErrInvalid)
	bare, err := bt.Create(ctx, store.BootstrapToken{Hash: hash2}, time.Hour)
	noErr(t, err)
	if bare.Labels != nil || bare.CreatedBy != "" {
		t.Fatalf("created %+v", bare)
	}

	got, err := bt.Get(ctx, tok.ID)
	noErr(t, err)
	equal(t, got, tok)
	_, err = bt.Get(ctx, "no-such-token")
	wantErr(t, err, store.ErrNotFound)

	list, err := bt.List(ctx)
	noErr(t, err)
	equal(t, list, []store.BootstrapToken{bare, tok})

	// Spent once; then a conflict that shows it spent.
	spent, err := bt.Spend(ctx, hash1, "agent-1")
	noErr(t, err)
	if spent.ID != tok.ID || spent.UsedAt == nil || spent.UsedBy != "agent-1" {
		t.Fatalf("spent %+v", spent)
	}
	fresh(t, "UsedAt", *spent.UsedAt)
	got, err = bt.Get(ctx, tok.ID)
	noErr(t, err)
	equal(t, got, spent)
	again, err := bt.Spend(ctx, hash1, "agent-2")
	wantErr(t, err, store.ErrConflict)
	equal(t, again, spent)
	_, err = bt.Spend(ctx, "0000", "agent-3")
	wantErr(t, err, store.ErrNotFound)

	// An expired token is not spent: the conflict shows it unused.
	short, err := bt.Create(ctx, store.BootstrapToken{Hash: "c3" + hash1[2:]}, time.Millisecond)
	noErr(t, err)
	eventually(t, "the token to expire", func() bool { return time.Since(short.ExpiresAt) > 10*time.Millisecond })
	expired, err := bt.Spend(ctx, short.Hash, "agent-4")
	wantErr(t, err, store.ErrConflict)
	equal(t, expired, short)

	// Events, without the hash; a failed Spend is none.
	equal(t, eventTypes(t, st, tok.ID), []string{"bootstrap_token.created", "bootstrap_token.spent"})
	equal(t, eventTypes(t, st, short.ID), []string{"bootstrap_token.created"})
	for _, e := range pending(t, st) {
		if bytes.Contains(e.Payload, []byte(hash1[2:])) || bytes.Contains(e.Payload, []byte(hash2)) || bytes.Contains(e.Payload, []byte("hash")) {
			t.Fatalf("event %s carries the hash: %s", e.Type, e.Payload)
		}
	}

	// Spent inside a transaction that rolls back, it is not spent.
	rollback := errors.New("roll back")
	err = st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.BootstrapTokens().Spend(ctx, hash2, "agent-5"); err != nil {
			return err
		}
		return rollback
	})
	wantErr(t, err, rollback)
	if _, err := bt.Spend(ctx, hash2, "agent-6"); err != nil {
		t.Fatalf("spend after a rolled back spend: %v", err)
	}
}

// testBootstrapTokenRace spends one token from 10 goroutines on two Stores
// (two servers): exactly one wins, the others see it spent by the winner.
func testBootstrapTokenRace(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	stores := []store.Store{openStore(t, open), openStore(t, open)}
	const hash = "d4e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1"
	_, err := stores[0].BootstrapTokens().Create(ctx, store.BootstrapToken{Hash: hash}, time.Minute)
	noErr(t, err)
	const n = 10
	var (
		wg      sync.WaitGroup
		results [n]store.BootstrapToken
		errs    [n]error
		start   = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = stores[i%2].BootstrapTokens().Spend(ctx, hash, fmt.Sprintf("agent-%d", i))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("spent twice: by agent-%d and agent-%d", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("agent-%d: %v, want a conflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("nobody spent the token")
	}
	for i, r := range results {
		if r.UsedBy != fmt.Sprintf("agent-%d", winner) || r.UsedAt == nil {
			t.Errorf("agent-%d sees %+v, want it spent by agent-%d", i, r, winner)
		}
	}
}
