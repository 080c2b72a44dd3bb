-- The control plane's tables, as in the PostgreSQL driver. Times are TEXT in
-- UTC, 2006-01-02T15:04:05.000000Z, so that they sort as text; JSON is TEXT
-- checked with json_valid; arrays (labels) are JSON arrays.

CREATE TABLE pipelines (
	id              TEXT PRIMARY KEY,
	name            TEXT NOT NULL UNIQUE,
	repository      TEXT NOT NULL DEFAULT '',
	definition      TEXT NOT NULL,
	last_run_number INTEGER NOT NULL DEFAULT 0,
	created_at      TEXT NOT NULL,
	updated_at      TEXT NOT NULL
) STRICT;

CREATE TABLE runs (
	id          TEXT PRIMARY KEY,
	pipeline_id TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
	run_number  INTEGER NOT NULL,
	status      TEXT NOT NULL,
	trigger     TEXT CHECK (json_valid(trigger)),
	git_ref     TEXT NOT NULL DEFAULT '',
	git_sha     TEXT NOT NULL DEFAULT '',
	created_at  TEXT NOT NULL,
	started_at  TEXT,
	finished_at TEXT,
	UNIQUE (pipeline_id, run_number)
) STRICT;
CREATE INDEX runs_created ON runs (created_at DESC);

CREATE TABLE stages (
	id          TEXT PRIMARY KEY,
	run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
	idx         INTEGER NOT NULL,
	name        TEXT NOT NULL,
	matrix      TEXT CHECK (json_valid(matrix)),
	status      TEXT NOT NULL,
	created_at  TEXT NOT NULL,
	started_at  TEXT,
	finished_at TEXT,
	UNIQUE (run_id, idx)
) STRICT;

-- jobs is also the queue: its queued rows, in the jobs_queue partial index
-- (which ends, implicitly, with the rowid: FIFO among equal queued_at).
CREATE TABLE jobs (
	id           TEXT PRIMARY KEY,
	run_id       TEXT REFERENCES runs (id) ON DELETE CASCADE,
	stage_id     TEXT, -- stages.id; no foreign key: deleted with the run
	name         TEXT NOT NULL,
	spec         TEXT CHECK (json_valid(spec)),
	labels       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(labels)),
	priority     INTEGER NOT NULL DEFAULT 0,
	state        TEXT NOT NULL,
	attempt      INTEGER NOT NULL DEFAULT 0,
	max_attempts INTEGER NOT NULL,
	worker_id    TEXT,
	lease_until  TEXT,
	exit_code    INTEGER,
	error        TEXT NOT NULL DEFAULT '',
	created_at   TEXT NOT NULL,
	queued_at    TEXT,
	started_at   TEXT,
	finished_at  TEXT
) STRICT;
CREATE INDEX jobs_queue ON jobs (priority DESC, queued_at) WHERE state = 'queued';
-- The jobs held by workers, few at any time: Extend by worker, RequeueExpired by
-- lease (a scan of them all).
CREATE INDEX jobs_held ON jobs (worker_id) WHERE state IN ('assigned', 'running');
CREATE INDEX jobs_run ON jobs (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE steps (
	id          TEXT PRIMARY KEY,
	job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	idx         INTEGER NOT NULL,
	name        TEXT NOT NULL,
	key         TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL,
	exit_code   INTEGER,
	outputs     TEXT CHECK (json_valid(outputs)),
	created_at  TEXT NOT NULL,
	started_at  TEXT,
	finished_at TEXT,
	UNIQUE (job_id, idx)
) STRICT;

CREATE TABLE step_logs (
	job_id    TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	seq       INTEGER NOT NULL,
	step_id   TEXT,
	stream    TEXT NOT NULL,
	content   TEXT NOT NULL,
	logged_at TEXT NOT NULL,
	PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE agents (
	id                TEXT PRIMARY KEY,
	name              TEXT NOT NULL,
	labels            TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(labels)),
	status            TEXT NOT NULL,
	version           TEXT NOT NULL DEFAULT '',
	os                TEXT NOT NULL DEFAULT '',
	arch              TEXT NOT NULL DEFAULT '',
	capacity          INTEGER NOT NULL,
	last_heartbeat_at TEXT,
	registered_at     TEXT NOT NULL
) STRICT;

CREATE TABLE secrets (
	scope      TEXT NOT NULL,
	scope_id   TEXT NOT NULL DEFAULT '',
	name       TEXT NOT NULL,
	ciphertext BLOB NOT NULL,
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL,
	PRIMARY KEY (scope, scope_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE cache_entries (
	scope        TEXT NOT NULL,
	key          TEXT NOT NULL,
	size_bytes   INTEGER NOT NULL,
	path         TEXT NOT NULL,
	created_at   TEXT NOT NULL,
	last_used_at TEXT NOT NULL,
	expires_at   TEXT,
	PRIMARY KEY (scope, key)
) STRICT;
CREATE INDEX cache_entries_lru ON cache_entries (last_used_at);

CREATE TABLE audit_log (
	id            INTEGER PRIMARY KEY,
	at            TEXT NOT NULL,
	actor         TEXT NOT NULL,
	action        TEXT NOT NULL,
	resource_type TEXT NOT NULL DEFAULT '',
	resource_id   TEXT NOT NULL DEFAULT '',
	details       TEXT CHECK (json_valid(details))
) STRICT;
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_resource ON audit_log (resource_type, resource_id, id);

CREATE TABLE templates (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	description TEXT NOT NULL DEFAULT '',
	version     INTEGER NOT NULL,
	spec        TEXT CHECK (json_valid(spec)),
	parameters  TEXT CHECK (json_valid(parameters)),
	created_at  TEXT NOT NULL,
	updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE outbox (
	seq          INTEGER PRIMARY KEY, -- publication order
	id           TEXT NOT NULL UNIQUE,
	type         TEXT NOT NULL,
	aggregate    TEXT NOT NULL,
	aggregate_id TEXT NOT NULL,
	payload      TEXT NOT NULL CHECK (json_valid(payload)),
	created_at   TEXT NOT NULL,
	published_at TEXT
) STRICT;
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
