package events_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/oxide-ci/oxide/internal/events"
)

const channelsDir = "../../../shared/reference/oxide-ci/spec/channels"

// params gives every channel parameter a distinct value, so that a builder
// that swaps its arguments builds a different subject.
var params = map[string]string{
	"agent_id":    "agent-1",
	"channel_id":  "chan-2",
	"customer_id": "cus-3",
	"gate_id":     "gate-4",
	"job_id":      "job-5",
	"license_id":  "lic-6",
	"matrix_id":   "mx-7",
	"pipeline_id": "pipe-8",
	"run_id":      "run-9",
	"secret_id":   "sec-10",
	"stage_name":  "build_11",
	"step_id":     "step-12",
}

// built maps each channel address to the subject its builder makes from params.
func built() map[string]string {
	p := params
	return map[string]string{
		"run.queued.{pipeline_id}":                     events.RunQueuedSubject(p["pipeline_id"]),
		"run.started.{pipeline_id}.{run_id}":           events.RunStartedSubject(p["pipeline_id"], p["run_id"]),
		"run.completed.{pipeline_id}.{run_id}":         events.RunCompletedSubject(p["pipeline_id"], p["run_id"]),
		"run.cancelled.{pipeline_id}.{run_id}":         events.RunCancelledSubject(p["pipeline_id"], p["run_id"]),
		"run.{run_id}.stage.{stage_name}.started":      events.StageStartedSubject(p["run_id"], p["stage_name"]),
		"run.{run_id}.stage.{stage_name}.completed":    events.StageCompletedSubject(p["run_id"], p["stage_name"]),
		"run.{run_id}.step.{step_id}.started":          events.StepStartedSubject(p["run_id"], p["step_id"]),
		"run.{run_id}.step.{step_id}.output":           events.StepOutputSubject(p["run_id"], p["step_id"]),
		"run.{run_id}.step.{step_id}.completed":        events.StepCompletedSubject(p["run_id"], p["step_id"]),
		"agent.registered":                             events.AgentRegisteredSubject,
		"agent.{agent_id}.heartbeat":                   events.AgentHeartbeatSubject(p["agent_id"]),
		"agent.disconnected":                           events.AgentDisconnectedSubject,
		"approval.requested.{gate_id}":                 events.ApprovalRequestedSubject(p["gate_id"]),
		"approval.granted.{gate_id}":                   events.ApprovalGrantedSubject(p["gate_id"]),
		"approval.rejected.{gate_id}":                  events.ApprovalRejectedSubject(p["gate_id"]),
		"approval.expired.{gate_id}":                   events.ApprovalExpiredSubject(p["gate_id"]),
		"artifact.{run_id}.uploaded":                   events.ArtifactUploadedSubject(p["run_id"]),
		"billing.subscription.created.{customer_id}":   events.SubscriptionCreatedSubject(p["customer_id"]),
		"billing.subscription.updated.{customer_id}":   events.SubscriptionUpdatedSubject(p["customer_id"]),
		"billing.subscription.cancelled.{customer_id}": events.SubscriptionCancelledSubject(p["customer_id"]),
		"billing.payment.succeeded.{customer_id}":      events.PaymentSucceededSubject(p["customer_id"]),
		"billing.payment.failed.{customer_id}":         events.PaymentFailedSubject(p["customer_id"]),
		"cache.hit.{run_id}":                           events.CacheHitSubject(p["run_id"]),
		"cache.miss.{run_id}":                          events.CacheMissSubject(p["run_id"]),
		"cache.uploaded.{run_id}":                      events.CacheUploadedSubject(p["run_id"]),
		"cache.evicted":                                events.CacheEvictedSubject,
		"license.validated.{license_id}":               events.LicenseValidatedSubject(p["license_id"]),
		"license.expired.{license_id}":                 events.LicenseExpiredSubject(p["license_id"]),
		"license.suspended.{license_id}":               events.LicenseSuspendedSubject(p["license_id"]),
		"matrix.expanded.{run_id}":                     events.MatrixExpandedSubject(p["run_id"]),
		"matrix.{matrix_id}.job.{job_id}.started":      events.MatrixJobStartedSubject(p["matrix_id"], p["job_id"]),
		"matrix.{matrix_id}.job.{job_id}.completed":    events.MatrixJobCompletedSubject(p["matrix_id"], p["job_id"]),
		"matrix.{matrix_id}.completed":                 events.MatrixCompletedSubject(p["matrix_id"]),
		"matrix.{matrix_id}.cancelled":                 events.MatrixCancelledSubject(p["matrix_id"]),
		"notification.sent.{channel_id}":               events.NotificationSentSubject(p["channel_id"]),
		"notification.failed.{channel_id}":             events.NotificationFailedSubject(p["channel_id"]),
		"secret.accessed.{secret_id}":                  events.SecretAccessedSubject(p["secret_id"]),
		"secret.rotated.{secret_id}":                   events.SecretRotatedSubject(p["secret_id"]),
		"webhook.github":                               events.WebhookGitHubSubject,
	}
}

// channelAddresses reads the address: lines of the spec's channel files.
func channelAddresses(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(channelsDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skipf("reference channels not found in %s", channelsDir)
	}
	addrs := map[string]string{} // address → file:line
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			if a, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "address:"); ok {
				addrs[strings.Trim(strings.TrimSpace(a), `"'`)] = fmt.Sprintf("%s:%d", filepath.Base(file), line)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return addrs
}

var param = regexp.MustCompile(`\{([a-z_]+)\}`)

func TestSubjectsCoverChannels(t *testing.T) {
	t.Parallel()
	addrs := channelAddresses(t)
	subjects := built()
	streams := events.StreamSubjects()
	for addr, where := range addrs {
		t.Run(addr, func(t *testing.T) {
			got, ok := subjects[addr]
			if !ok {
				t.Fatalf("%s: address %q has no subject builder", where, addr)
			}
			want := param.ReplaceAllStringFunc(addr, func(m string) string {
				v, ok := params[m[1:len(m)-1]]
				if !ok {
					t.Fatalf("%s: parameter %s has no test value", where, m)
				}
				return v
			})
			if got != want {
				t.Errorf("builder for %q = %q, want %q", addr, got, want)
			}
			if err := events.ValidatePattern(got); err != nil || strings.ContainsAny(got, "*>") {
				t.Errorf("subject %q is not a literal subject: %v", got, err)
			}
			var covering []string
			for _, s := range streams {
				if events.MatchSubject(s, got) {
					covering = append(covering, s)
				}
			}
			if len(covering) != 1 {
				t.Errorf("subject %q is covered by stream filters %q, want exactly one", got, covering)
			}
		})
	}
	for addr := range subjects {
		if _, ok := addrs[addr]; !ok {
			t.Errorf("builder for %q, which no channel file declares", addr)
		}
	}
}

func TestStreamSubjectsValid(t *testing.T) {
	t.Parallel()
	s := events.StreamSubjects()
	if !slices.IsSorted(s) || len(slices.Compact(slices.Clone(s))) != len(s) {
		t.Errorf("stream subjects not sorted and unique: %q", s)
	}
	for _, p := range s {
		if err := events.ValidatePattern(p); err != nil {
			t.Error(err)
		}
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "%"},
		{"01J9Z3K5V7", "01J9Z3K5V7"},
		{"build-linux_amd64", "build-linux_amd64"},
		{"Build & Test", "Build%20%26%20Test"},
		{"a.b", "a%2Eb"},
		{"*", "%2A"},
		{">", "%3E"},
		{"100%", "100%25"},
		{"é", "%C3%A9"},
	}
	for _, tt := range tests {
		if got := events.Token(tt.in); got != tt.want {
			t.Errorf("Token(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Whatever the values, a builder yields a subject of the address's shape.
	s := events.StageStartedSubject("run 1.2", "deploy > prod.*")
	if err := events.ValidatePattern(s); err != nil || strings.Count(s, ".") != 4 ||
		!events.MatchSubject("run.*.stage.*.started", s) {
		t.Errorf("StageStartedSubject with odd values = %q (%v)", s, err)
	}
}

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		bad     string // substring of the error, "" when valid
	}{
		{"run.*.started", ""},
		{"run.>", ""},
		{">", ""},
		{"*", ""},
		{"run.01J9.*", ""},
		{"agent.*.heartbeat", ""},
		{"", "empty"},
		{"run..started", "token 2 is empty"},
		{".run", "token 1 is empty"},
		{"run.", "token 2 is empty"},
		{"run.>.started", `">" must be the last token`},
		{"run.start*", "wildcard inside token"},
		{"run.>>", "wildcard inside token"},
		{"run. started", "whitespace"},
		{"run.\tx", "whitespace"},
	}
	for _, tt := range tests {
		err := events.ValidatePattern(tt.pattern)
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("ValidatePattern(%q) = %v, want nil", tt.pattern, err)
		case tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad) || !errors.Is(err, events.ErrInvalidPattern)):
			t.Errorf("ValidatePattern(%q) = %v, want ErrInvalidPattern mentioning %q", tt.pattern, err, tt.bad)
		}
	}
}

func TestMatchSubject(t *testing.T) {
	t.Parallel()
	started := events.RunStartedSubject("p1", "r1")      // run.started.p1.r1
	stepOut := events.StepOutputSubject("r1", "s1")      // run.r1.step.s1.output
	stage := events.StageCompletedSubject("r1", "build") // run.r1.stage.build.completed
	beat := events.AgentHeartbeatSubject("a1")           // agent.a1.heartbeat
	queued := events.RunQueuedSubject("p1")              // run.queued.p1
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"run.*.started", started, false}, // run.started has 4 tokens
		{"run.started.*.*", started, true},
		{"run.started.p1.>", started, true},
		{"run.started.>", started, true},
		{"run.*.*.r1", started, true},
		{"run.r1.*", stepOut, false}, // * is one token only
		{"run.r1.>", stepOut, true},
		{"run.r1.>", stage, true},
		{"run.*.step.*.output", stepOut, true},
		{"run.*.step.*.output", stage, false},
		{"run.*.stage.*.completed", stage, true},
		{"agent.*.heartbeat", beat, true},
		{"agent.>", beat, true},
		{"agent.*", beat, false},
		{"agent.*", events.AgentRegisteredSubject, true},
		{">", beat, true},
		{"*", beat, false},
		{"run.queued.*", queued, true},
		{"run.queued.*.*", queued, false},
		{"run.queued.p1.>", queued, false}, // > needs at least one token
		{"run.queued.p1", queued, true},
		{"run.queued.p2", queued, false},
	}
	for _, tt := range tests {
		if got := events.MatchSubject(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("MatchSubject(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
	}
}
