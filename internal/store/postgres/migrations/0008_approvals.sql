-- Approval gates of stages that wait for a manual approval (one per stage,
-- keyed by it), and the votes cast on them: one per user and gate, in the
-- order of seq.

CREATE TABLE approval_gates (
	stage_id   text COLLATE "C" PRIMARY KEY REFERENCES stages (id) ON DELETE CASCADE,
	run_id     text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
	stage_name text NOT NULL,
	required   integer NOT NULL CHECK (required >= 1),
	approvers  text[] NOT NULL DEFAULT '{}',
	status     text NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz,
	closed_at  timestamptz
);
CREATE INDEX approval_gates_run ON approval_gates (run_id);
CREATE INDEX approval_gates_expiry ON approval_gates (expires_at) WHERE status = 'pending';

CREATE TABLE approvals (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	stage_id   text COLLATE "C" NOT NULL REFERENCES approval_gates (stage_id) ON DELETE CASCADE,
	user_id    text NOT NULL,
	decision   text NOT NULL CHECK (decision IN ('approved', 'rejected')),
	comment    text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	UNIQUE (stage_id, user_id)
);
