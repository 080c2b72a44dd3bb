// Package provider sizes a pool of elastic workers: an Autoscaler watches
// the job queue and asks a Provider (Docker; Kubernetes and Firecracker
// later) for workers, each an agent that registers with a one-time
// bootstrap token, and destroys them when they have been idle too long.
// Every worker's provisioning is a state machine persisted in the store
// (store.Worker), so that a restarted server finishes what it began and
// nothing a provider made is left behind.
package provider

import "context"

// Spec is a worker to create.
type Spec struct {
	ID     string   // the worker's ID (store.Worker.ID): its name and label
	Server string   // the gRPC address, HOST:PORT, that its agent dials
	Token  string   // the bootstrap token its agent registers with
	Labels []string // announced by its agent, besides the token's
}

// Instance is a worker as its provider sees it.
type Instance struct {
	WorkerID string // from the label it was created with
	Handle   string // the provider's name for it: a container ID
	Running  bool
}

// Capacity is what a provider's host has and uses.
type Capacity struct {
	CPUs        int   // on the host
	MemoryBytes int64 // on the host
	Workers     int   // running workers this provider made
}

// Provider creates and destroys workers.
type Provider interface {
	// Name identifies the provider and its pool of workers in
	// store.Worker.Provider: "docker:default".
	Name() string
	// Create starts a worker whose agent registers with spec.Token, and
	// returns its handle. A worker that it could not start is removed
	// before Create returns the error.
	Create(ctx context.Context, spec Spec) (handle string, err error)
	// Destroy stops a worker (with a grace period for its agent to hand
	// its jobs back) and removes it with all it made. A worker that is
	// gone already is not an error.
	Destroy(ctx context.Context, handle string) error
	// List returns every worker this provider made, running or not.
	List(ctx context.Context) ([]Instance, error)
	// Health reports whether the provider can create workers now.
	Health(ctx context.Context) error
	Capacity(ctx context.Context) (Capacity, error)
}
