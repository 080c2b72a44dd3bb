// Package pipeline holds the pipeline definition that users write in
// .oxide-ci/pipeline.yaml: its types, the parser that reads YAML with
// positions, normalizes the GitHub-style aliases and validates the whole
// document, reporting every problem as FILE:LINE:COL: message.
package pipeline

import (
	"time"

	"github.com/oxide-ci/oxide/internal/spec"
)

// Pos is a position in a pipeline file, 1-based. The zero Pos means unknown.
type Pos struct {
	Line, Col int
}

// Pipeline is a parsed, normalized and validated pipeline definition.
type Pipeline struct {
	File        string // path the definition was read from, for messages
	Version     string // "1" or "1.0"
	Name        string
	Description string
	Triggers    []Trigger
	Variables   Vars
	Environment *Environment // default for every stage that sets none
	Stages      []*Stage
	Cache       *Cache
	Artifacts   *Artifacts
	Timeout     time.Duration // timeout_minutes, default 60m
	Concurrency *Concurrency
	// Warnings name what the file asks for that Oxide does not do yet,
	// sorted by position.
	Warnings []Warning
}

// Vars are variables in file order: they become the steps' environment.
type Vars []Var

// Var is one variable. Value may hold ${{ }} expressions.
type Var struct {
	Name, Value string
	Pos         Pos
}

// Map returns the variables as a map; later entries win.
func (v Vars) Map() map[string]string {
	m := make(map[string]string, len(v))
	for _, kv := range v {
		m[kv.Name] = kv.Value
	}
	return m
}

// TriggerType is one of push, pull_request, cron, manual, api, webhook.
type TriggerType string

// Trigger types of the reference schema.
const (
	TriggerPush        TriggerType = "push"
	TriggerPullRequest TriggerType = "pull_request"
	TriggerCron        TriggerType = "cron"
	TriggerManual      TriggerType = "manual"
	TriggerAPI         TriggerType = "api"
	TriggerWebhook     TriggerType = "webhook"
)

// Trigger says when the pipeline runs. The shorthand `- push: {branches}`
// and `- schedule: {cron}` normalize to Type push and cron.
type Trigger struct {
	Pos         Pos
	Type        TriggerType
	Branches    []string
	Paths       []string
	PathsIgnore []string
	Tags        []string
	Cron        string
	Timezone    string
}

// Stage is one node of the pipeline's DAG before matrix expansion.
type Stage struct {
	Pos         Pos
	Name        string
	DisplayName string
	// DependsOn lists the stages this one waits for. When HasDependsOn is
	// false the stage follows the stage before it in the file;
	// `depends_on: []` makes it a root. `needs` is an alias.
	DependsOn    []string
	DependsOnPos []Pos // position of each DependsOn entry
	HasDependsOn bool
	Condition    *Condition
	Environment  *Environment
	Variables    Vars
	Secrets      []SecretRef
	Steps        []*Step
	Parallel     bool
	Timeout      time.Duration // timeout_minutes, or `timeout: 10m`
	Retry        *Retry
	Agent        *AgentSelector
	Matrix       *Matrix
	Approval     *Approval
	Cache        *Cache
	Artifacts    *Artifacts
}

// Label is the stage's display name, or its name.
func (s *Stage) Label() string {
	if s.DisplayName != "" {
		return s.DisplayName
	}
	return s.Name
}

// Step is one command or plugin call of a stage.
type Step struct {
	Pos         Pos
	Name        string
	ID          string // `id`; defaults to Name. Outputs are steps.<ID>.outputs.<key>
	DisplayName string
	Plugin      string         // `plugin` or its alias `uses`
	With        map[string]any // plugin inputs (`with`)
	Run         string
	Shell       string // bash (default), sh, python, powershell, pwsh
	WorkingDir  string // working_directory, relative to the workspace
	Environment *Environment
	Variables   Vars // `variables` or its alias `env`
	Secrets     []SecretRef
	Condition   *Condition
	Timeout     time.Duration
	Retry       *Retry
	// ContinueOnError is "true", "false" or a ${{ }} expression that
	// evaluates to one of them (the reference writes
	// "${{ matrix.experimental || false }}").
	ContinueOnError string
	Outputs         []string // declared output names (documentation only)
}

// Condition decides whether a stage or step runs. A plain string in YAML is
// If; both If and Unless may be given.
type Condition struct {
	Pos    Pos
	If     string
	Unless string
}

// Retry says how a failed step (or stage) is tried again.
type Retry struct {
	MaxAttempts        int           // 1..10; 1 means no retry
	Delay              time.Duration // delay_seconds, default 10s
	ExponentialBackoff bool          // default true
	RetryOn            []string      // failure, timeout, cancelled; default [failure]
}

// AgentSelector constrains which agent runs a stage.
type AgentSelector struct {
	Labels []string
	Name   string
}

// Matrix expands a stage into one instance per combination. All three
// shapes of the reference corpus normalize to this one.
type Matrix struct {
	Pos         Pos
	Dimensions  []Dimension // in file order
	Include     []map[string]any
	Exclude     []map[string]any
	FailFast    bool // default true
	MaxParallel int  // 0: unbounded
}

// Dimension is one matrix axis. Values are string, int, float64 or bool.
type Dimension struct {
	Name   string
	Values []any
}

// Approval is a manual gate before a stage runs: it opens when the stage's
// dependencies are done and lets the stage start once RequiredApprovers of
// the Approvers have approved it, or ends it at the first rejection or
// after TimeoutHours (0: no limit but the pipeline's timeout).
type Approval struct {
	Required bool
	// Approvers are who may vote: API token names or roles; empty lets
	// anyone whom the API lets approve.
	Approvers         []string
	RequiredApprovers int // approvals needed; at least 1
	TimeoutHours      int
}

// Concurrency limits runs of one group to one at a time.
type Concurrency struct {
	Group            string
	CancelInProgress bool
}

// Cache configures a cache restored before and saved after a stage.
type Cache struct {
	Paths       []string
	Key         string
	RestoreKeys []string
	TTLDays     int
}

// Artifacts configures files uploaded after a stage or run.
type Artifacts struct {
	Paths         []string
	Name          string
	RetentionDays int
	Compression   string // gzip, zstd, none
}

// SecretRef injects a secret as an environment variable.
type SecretRef struct {
	Pos      Pos
	Name     string // environment variable name
	Provider string // oxide, vault, aws_ssm, aws_secrets_manager, gcp_secret_manager, azure_keyvault, environment
	Path     string
	Version  string
	Key      string
	Masked   bool // default true
	Required bool // default true
}

// The environment types are the wire format's: a stage's environment
// reaches the worker as written.
type (
	EnvironmentType = spec.EnvironmentType
	Environment     = spec.Environment
	Container       = spec.Container
	Registry        = spec.Registry
	Volume          = spec.Volume
	Resources       = spec.Resources
	GPU             = spec.GPU
	Nix             = spec.Nix
	Firecracker     = spec.Firecracker
)

// Environment types of the reference schema.
const (
	EnvHost        = spec.EnvHost
	EnvContainer   = spec.EnvContainer
	EnvNix         = spec.EnvNix
	EnvFirecracker = spec.EnvFirecracker
)
