package scheduler

import (
	"context"
	"encoding/json"

	"github.com/oxide-ci/oxide/internal/store"
)

// record writes the audit entry of a change by actor through tx, the
// change's transaction, so that the change and its entry are stored
// together or not at all. details are encoded as JSON; nil: none. A call
// without an actor (the service's own callers, tests) records nothing.
func record(ctx context.Context, tx store.Tx, actor, action, resourceType, resourceID string, details any) error {
	if actor == "" {
		return nil
	}
	e := store.AuditEntry{Actor: actor, Action: action, ResourceType: resourceType, ResourceID: resourceID}
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return err
		}
		e.Details = b
	}
	_, err := tx.Audit().Record(ctx, e)
	return err
}
