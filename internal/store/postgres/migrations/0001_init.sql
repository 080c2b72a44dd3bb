-- The control plane's tables. IDs are text (UUIDs by default) in the C
-- collation, so that any string the API receives is a valid key and
-- comparisons are byte-wise. Times are timestamptz, stamped with now().

CREATE TABLE pipelines (
	id              text COLLATE "C" PRIMARY KEY,
	name            text NOT NULL UNIQUE,
	repository      text NOT NULL DEFAULT '',
	definition      text NOT NULL,
	last_run_number integer NOT NULL DEFAULT 0, -- bumped, under the row lock, by each new run
	created_at      timestamptz NOT NULL,
	updated_at      timestamptz NOT NULL
);

CREATE TABLE runs (
	id          text COLLATE "C" PRIMARY KEY,
	pipeline_id text COLLATE "C" NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
	run_number  integer NOT NULL,
	status      text NOT NULL,
	trigger     json,
	git_ref     text NOT NULL DEFAULT '',
	git_sha     text NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL,
	started_at  timestamptz,
	finished_at timestamptz,
	UNIQUE (pipeline_id, run_number)
);
CREATE INDEX runs_created ON runs (created_at DESC);

CREATE TABLE stages (
	id          text COLLATE "C" PRIMARY KEY,
	run_id      text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
	idx         integer NOT NULL,
	name        text NOT NULL,
	matrix      json,
	status      text NOT NULL,
	created_at  timestamptz NOT NULL,
	started_at  timestamptz,
	finished_at timestamptz,
	UNIQUE (run_id, idx)
);

-- jobs is also the queue: its queued rows, in the jobs_queue partial index.
CREATE TABLE jobs (
	id           text COLLATE "C" PRIMARY KEY,
	seq          bigint GENERATED ALWAYS AS IDENTITY, -- insertion order: FIFO among equal queued_at
	run_id       text COLLATE "C" REFERENCES runs (id) ON DELETE CASCADE,
	stage_id     text COLLATE "C", -- stages.id; no foreign key: deleted with the run
	name         text NOT NULL,
	spec         json,
	labels       text[] NOT NULL DEFAULT '{}',
	priority     integer NOT NULL DEFAULT 0,
	state        text NOT NULL,
	attempt      integer NOT NULL DEFAULT 0,
	max_attempts integer NOT NULL,
	worker_id    text COLLATE "C",
	lease_until  timestamptz,
	exit_code    integer,
	error        text NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL,
	queued_at    timestamptz,
	started_at   timestamptz,
	finished_at  timestamptz
);
CREATE INDEX jobs_queue ON jobs (priority DESC, queued_at, seq) WHERE state = 'queued';
-- The jobs held by workers, few at any time: Extend by worker, RequeueExpired by
-- lease (a scan of them all).
CREATE INDEX jobs_held ON jobs (worker_id) WHERE state IN ('assigned', 'running');
CREATE INDEX jobs_run ON jobs (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE steps (
	id          text COLLATE "C" PRIMARY KEY,
	job_id      text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	idx         integer NOT NULL,
	name        text NOT NULL,
	key         text NOT NULL DEFAULT '',
	status      text NOT NULL,
	exit_code   integer,
	outputs     json,
	created_at  timestamptz NOT NULL,
	started_at  timestamptz,
	finished_at timestamptz,
	UNIQUE (job_id, idx)
);

CREATE TABLE step_logs (
	job_id    text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	seq       bigint NOT NULL,
	step_id   text COLLATE "C",
	stream    text NOT NULL,
	content   text NOT NULL,
	logged_at timestamptz NOT NULL,
	PRIMARY KEY (job_id, seq)
);

CREATE TABLE agents (
	id                text COLLATE "C" PRIMARY KEY,
	name              text NOT NULL,
	labels            text[] NOT NULL DEFAULT '{}',
	status            text NOT NULL,
	version           text NOT NULL DEFAULT '',
	os                text NOT NULL DEFAULT '',
	arch              text NOT NULL DEFAULT '',
	capacity          integer NOT NULL,
	last_heartbeat_at timestamptz,
	registered_at     timestamptz NOT NULL
);

CREATE TABLE secrets (
	scope      text NOT NULL,
	scope_id   text COLLATE "C" NOT NULL DEFAULT '',
	name       text NOT NULL,
	ciphertext bytea NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (scope, scope_id, name)
);

CREATE TABLE cache_entries (
	scope        text COLLATE "C" NOT NULL,
	key          text COLLATE "C" NOT NULL,
	size_bytes   bigint NOT NULL,
	path         text NOT NULL,
	created_at   timestamptz NOT NULL,
	last_used_at timestamptz NOT NULL,
	expires_at   timestamptz,
	PRIMARY KEY (scope, key)
);
CREATE INDEX cache_entries_lru ON cache_entries (last_used_at);

CREATE TABLE audit_log (
	id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at            timestamptz NOT NULL,
	actor         text NOT NULL,
	action        text NOT NULL,
	resource_type text NOT NULL DEFAULT '',
	resource_id   text NOT NULL DEFAULT '',
	details       json
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_resource ON audit_log (resource_type, resource_id, id);

CREATE TABLE templates (
	id          text COLLATE "C" PRIMARY KEY,
	name        text NOT NULL UNIQUE,
	description text NOT NULL DEFAULT '',
	version     integer NOT NULL,
	spec        json,
	parameters  json,
	created_at  timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL
);

CREATE TABLE outbox (
	id           text COLLATE "C" PRIMARY KEY,
	seq          bigint GENERATED ALWAYS AS IDENTITY, -- publication order
	type         text NOT NULL,
	aggregate    text NOT NULL,
	aggregate_id text NOT NULL,
	payload      json NOT NULL,
	created_at   timestamptz NOT NULL,
	published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
