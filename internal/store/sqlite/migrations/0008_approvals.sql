-- Approval gates of stages that wait for a manual approval (one per stage,
-- keyed by it), and the votes cast on them: one per user and gate, in the
-- order of their rowids.

CREATE TABLE approval_gates (
	stage_id   TEXT PRIMARY KEY REFERENCES stages (id) ON DELETE CASCADE,
	run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
	stage_name TEXT NOT NULL,
	required   INTEGER NOT NULL CHECK (required >= 1),
	approvers  TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(approvers)),
	status     TEXT NOT NULL,
	created_at TEXT NOT NULL,
	expires_at TEXT,
	closed_at  TEXT
) STRICT;
CREATE INDEX approval_gates_run ON approval_gates (run_id);
CREATE INDEX approval_gates_expiry ON approval_gates (expires_at) WHERE status = 'pending';

CREATE TABLE approvals (
	stage_id   TEXT NOT NULL REFERENCES approval_gates (stage_id) ON DELETE CASCADE,
	user_id    TEXT NOT NULL,
	decision   TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
	comment    TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	UNIQUE (stage_id, user_id)
) STRICT;
