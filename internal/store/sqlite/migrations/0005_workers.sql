-- Workers that providers made for the autoscaler, each row its provisioning
-- state machine. token_id and agent_id have no foreign keys: tokens and
-- agents go away before the rows that remember them.

CREATE TABLE workers (
	id         TEXT PRIMARY KEY,
	provider   TEXT NOT NULL,
	state      TEXT NOT NULL,
	token_id   TEXT NOT NULL DEFAULT '',
	agent_id   TEXT NOT NULL DEFAULT '',
	handle     TEXT NOT NULL DEFAULT '',
	error      TEXT NOT NULL DEFAULT '',
	deadline   TEXT NOT NULL,
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL
) STRICT;
CREATE INDEX workers_provider_state ON workers (provider, state);
