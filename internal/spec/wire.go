package spec

import "time"

// Assignment is one claimed attempt of a job, as the control plane hands it
// to a worker: in-process, or pushed to an agent.
type Assignment struct {
	Lease Lease
	RunID string // empty for a job submitted directly
	Job   Job    // the server's secrets resolved; Workspace and Runner are the worker's to set
	// LocalSecrets are the references that the worker resolves itself
	// (provider environment: the worker's environment variables).
	LocalSecrets []SecretRef
	// RegistryPassword is the container registry's password, from the
	// secret that registry.password_secret names.
	RegistryPassword string
}

// Lease names one claim of a job: only the current lease may start,
// complete or fail it.
type Lease struct {
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
	Attempt  int    `json:"attempt"`
}

// LogLine is one line of a job's output.
type LogLine struct {
	Seq     int64     `json:"seq"`               // per job, increasing: workers put the attempt in the high 32 bits
	Attempt int       `json:"attempt"`           // the job's attempt that wrote it
	StepID  string    `json:"step_id,omitempty"` // the step's Key: its id in the pipeline
	Stream  string    `json:"stream"`            // stdout, stderr or system
	Text    string    `json:"text"`
	Time    time.Time `json:"time"`
}
