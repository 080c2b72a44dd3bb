package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/oxide-ci/oxide/internal/secrets"
	"github.com/oxide-ci/oxide/internal/spec"
	"github.com/oxide-ci/oxide/internal/store"
)

// secretResolver resolves provider oxide references from the native
// store: the secret named by the reference's path (else its name) in the
// pipeline's scope, else in the organization's.
type secretResolver struct {
	store store.Store
	box   *secrets.Box
}

func (r secretResolver) Resolve(ctx context.Context, pipelineID string, ref spec.SecretRef) (string, bool, error) {
	name := ref.Path
	if name == "" {
		name = ref.Name
	}
	for _, k := range []store.SecretKey{
		{Scope: store.ScopePipeline, ScopeID: pipelineID, Name: name},
		{Scope: store.ScopeOrganization, Name: name},
	} {
		s, err := r.store.Secrets().Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", false, err
		}
		v, err := r.box.Open(s.Ciphertext, secrets.AD(string(k.Scope), k.ScopeID, k.Name))
		if err != nil {
			return "", false, fmt.Errorf("secret %s: %w", name, err)
		}
		return string(v), true, nil
	}
	return "", false, nil
}
