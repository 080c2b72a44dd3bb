package events

import (
	"errors"
	"fmt"
	"strings"
)

// Subjects of the channels of the reference AsyncAPI specification
// (spec/channels/*.yaml), one builder per channel address. Every value put
// into a subject goes through Token, so that an id or a stage name with a dot
// or a space still makes exactly one token.

// Run lifecycle (channels/run.yaml).

// RunQueuedSubject is run.queued.{pipeline_id}.
func RunQueuedSubject(pipelineID string) string { return "run.queued." + Token(pipelineID) }

// RunStartedSubject is run.started.{pipeline_id}.{run_id}.
func RunStartedSubject(pipelineID, runID string) string {
	return "run.started." + Token(pipelineID) + "." + Token(runID)
}

// RunCompletedSubject is run.completed.{pipeline_id}.{run_id}.
func RunCompletedSubject(pipelineID, runID string) string {
	return "run.completed." + Token(pipelineID) + "." + Token(runID)
}

// RunCancelledSubject is run.cancelled.{pipeline_id}.{run_id}.
func RunCancelledSubject(pipelineID, runID string) string {
	return "run.cancelled." + Token(pipelineID) + "." + Token(runID)
}

// Stage lifecycle (channels/stage.yaml).

// StageStartedSubject is run.{run_id}.stage.{stage_name}.started.
func StageStartedSubject(runID, stageName string) string {
	return "run." + Token(runID) + ".stage." + Token(stageName) + ".started"
}

// StageCompletedSubject is run.{run_id}.stage.{stage_name}.completed.
func StageCompletedSubject(runID, stageName string) string {
	return "run." + Token(runID) + ".stage." + Token(stageName) + ".completed"
}

// Step lifecycle (channels/step.yaml).

// StepStartedSubject is run.{run_id}.step.{step_id}.started.
func StepStartedSubject(runID, stepID string) string {
	return "run." + Token(runID) + ".step." + Token(stepID) + ".started"
}

// StepOutputSubject is run.{run_id}.step.{step_id}.output.
func StepOutputSubject(runID, stepID string) string {
	return "run." + Token(runID) + ".step." + Token(stepID) + ".output"
}

// StepCompletedSubject is run.{run_id}.step.{step_id}.completed.
func StepCompletedSubject(runID, stepID string) string {
	return "run." + Token(runID) + ".step." + Token(stepID) + ".completed"
}

// Agent pool (channels/agent.yaml).

// Fixed agent subjects.
const (
	AgentRegisteredSubject   = "agent.registered"
	AgentDisconnectedSubject = "agent.disconnected"
)

// AgentHeartbeatSubject is agent.{agent_id}.heartbeat.
func AgentHeartbeatSubject(agentID string) string { return "agent." + Token(agentID) + ".heartbeat" }

// Approval gates (channels/approval.yaml).

// ApprovalRequestedSubject is approval.requested.{gate_id}.
func ApprovalRequestedSubject(gateID string) string { return "approval.requested." + Token(gateID) }

// ApprovalGrantedSubject is approval.granted.{gate_id}.
func ApprovalGrantedSubject(gateID string) string { return "approval.granted." + Token(gateID) }

// ApprovalRejectedSubject is approval.rejected.{gate_id}.
func ApprovalRejectedSubject(gateID string) string { return "approval.rejected." + Token(gateID) }

// ApprovalExpiredSubject is approval.expired.{gate_id}.
func ApprovalExpiredSubject(gateID string) string { return "approval.expired." + Token(gateID) }

// Artifacts (channels/artifact.yaml).

// ArtifactUploadedSubject is artifact.{run_id}.uploaded.
func ArtifactUploadedSubject(runID string) string { return "artifact." + Token(runID) + ".uploaded" }

// Billing (channels/billing.yaml).

// SubscriptionCreatedSubject is billing.subscription.created.{customer_id}.
func SubscriptionCreatedSubject(customerID string) string {
	return "billing.subscription.created." + Token(customerID)
}

// SubscriptionUpdatedSubject is billing.subscription.updated.{customer_id}.
func SubscriptionUpdatedSubject(customerID string) string {
	return "billing.subscription.updated." + Token(customerID)
}

// SubscriptionCancelledSubject is billing.subscription.cancelled.{customer_id}.
func SubscriptionCancelledSubject(customerID string) string {
	return "billing.subscription.cancelled." + Token(customerID)
}

// PaymentSucceededSubject is billing.payment.succeeded.{customer_id}.
func PaymentSucceededSubject(customerID string) string {
	return "billing.payment.succeeded." + Token(customerID)
}

// PaymentFailedSubject is billing.payment.failed.{customer_id}.
func PaymentFailedSubject(customerID string) string {
	return "billing.payment.failed." + Token(customerID)
}

// Cache (channels/cache.yaml).

// CacheEvictedSubject is the fixed subject of cache evictions.
const CacheEvictedSubject = "cache.evicted"

// CacheHitSubject is cache.hit.{run_id}.
func CacheHitSubject(runID string) string { return "cache.hit." + Token(runID) }

// CacheMissSubject is cache.miss.{run_id}.
func CacheMissSubject(runID string) string { return "cache.miss." + Token(runID) }

// CacheUploadedSubject is cache.uploaded.{run_id}.
func CacheUploadedSubject(runID string) string { return "cache.uploaded." + Token(runID) }

// Licensing (channels/licensing.yaml).

// LicenseValidatedSubject is license.validated.{license_id}.
func LicenseValidatedSubject(licenseID string) string { return "license.validated." + Token(licenseID) }

// LicenseExpiredSubject is license.expired.{license_id}.
func LicenseExpiredSubject(licenseID string) string { return "license.expired." + Token(licenseID) }

// LicenseSuspendedSubject is license.suspended.{license_id}.
func LicenseSuspendedSubject(licenseID string) string { return "license.suspended." + Token(licenseID) }

// Matrix builds (channels/matrix.yaml).

// MatrixExpandedSubject is matrix.expanded.{run_id}.
func MatrixExpandedSubject(runID string) string { return "matrix.expanded." + Token(runID) }

// MatrixJobStartedSubject is matrix.{matrix_id}.job.{job_id}.started.
func MatrixJobStartedSubject(matrixID, jobID string) string {
	return "matrix." + Token(matrixID) + ".job." + Token(jobID) + ".started"
}

// MatrixJobCompletedSubject is matrix.{matrix_id}.job.{job_id}.completed.
func MatrixJobCompletedSubject(matrixID, jobID string) string {
	return "matrix." + Token(matrixID) + ".job." + Token(jobID) + ".completed"
}

// MatrixCompletedSubject is matrix.{matrix_id}.completed.
func MatrixCompletedSubject(matrixID string) string {
	return "matrix." + Token(matrixID) + ".completed"
}

// MatrixCancelledSubject is matrix.{matrix_id}.cancelled.
func MatrixCancelledSubject(matrixID string) string {
	return "matrix." + Token(matrixID) + ".cancelled"
}

// Notifications (channels/notification.yaml).

// NotificationSentSubject is notification.sent.{channel_id}.
func NotificationSentSubject(channelID string) string { return "notification.sent." + Token(channelID) }

// NotificationFailedSubject is notification.failed.{channel_id}.
func NotificationFailedSubject(channelID string) string {
	return "notification.failed." + Token(channelID)
}

// Secrets (channels/secrets.yaml).

// SecretAccessedSubject is secret.accessed.{secret_id}.
func SecretAccessedSubject(secretID string) string { return "secret.accessed." + Token(secretID) }

// SecretRotatedSubject is secret.rotated.{secret_id}.
func SecretRotatedSubject(secretID string) string { return "secret.rotated." + Token(secretID) }

// Webhooks (channels/webhook.yaml).

// WebhookGitHubSubject is the fixed subject of received GitHub webhooks.
const WebhookGitHubSubject = "webhook.github"

// StreamSubjects returns the subject filters of the event stream: one per
// first token of the channel addresses, together covering every subject above.
func StreamSubjects() []string {
	return []string{
		"agent.>",
		"approval.>",
		"artifact.>",
		"billing.>",
		"cache.>",
		"license.>",
		"matrix.>",
		"notification.>",
		"oxide.>", // the control plane's own state changes: jobs, steps, agents, pipelines
		"run.>",
		"secret.>",
		"webhook.>",
	}
}

// Token makes s one subject token. Letters, digits, '-' and '_' are kept;
// every other byte (the separator '.', the wildcards '*' and '>', spaces,
// '%', non-ASCII) becomes %XX, so distinct values give distinct tokens. The
// empty string becomes "%", which no non-empty value produces.
func Token(s string) string {
	if s == "" {
		return "%"
	}
	n := 0
	for i := range len(s) {
		if !tokenSafe(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := range len(s) {
		c := s[i]
		if tokenSafe(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

func tokenSafe(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// ErrInvalidPattern is returned, wrapped with the reason, for a subscription
// pattern that is not a valid NATS subject pattern.
var ErrInvalidPattern = errors.New("invalid subject pattern")

// ValidatePattern checks a NATS-style subject pattern: dot-separated,
// non-empty tokens without whitespace, where "*" stands for exactly one token
// and ">" for one or more trailing tokens.
func ValidatePattern(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPattern)
	}
	if i := strings.IndexAny(pattern, " \t\r\n\f\v"); i >= 0 {
		return fmt.Errorf("%w %q: whitespace at offset %d", ErrInvalidPattern, pattern, i)
	}
	rest := pattern
	for i := 1; ; i++ {
		tok, tail, more := strings.Cut(rest, ".")
		switch {
		case tok == "":
			return fmt.Errorf("%w %q: token %d is empty", ErrInvalidPattern, pattern, i)
		case tok == ">" && more:
			return fmt.Errorf("%w %q: \">\" must be the last token", ErrInvalidPattern, pattern)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("%w %q: wildcard inside token %q (a wildcard must be a whole token)", ErrInvalidPattern, pattern, tok)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// MatchSubject reports whether subject, a literal subject, matches pattern
// with NATS semantics. The pattern is assumed valid (see ValidatePattern).
func MatchSubject(pattern, subject string) bool {
	for {
		ptok, prest, pmore := strings.Cut(pattern, ".")
		stok, srest, smore := strings.Cut(subject, ".")
		switch {
		case ptok == ">":
			return true // ">" needs one token, and Cut always yields one
		case ptok != "*" && ptok != stok:
			return false
		case !pmore || !smore:
			return pmore == smore
		}
		pattern, subject = prest, srest
	}
}
