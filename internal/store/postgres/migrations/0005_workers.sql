-- Workers that providers made for the autoscaler, each row its provisioning
-- state machine. token_id and agent_id have no foreign keys: tokens and
-- agents go away before the rows that remember them.

CREATE TABLE workers (
	id         text COLLATE "C" PRIMARY KEY,
	provider   text NOT NULL,
	state      text NOT NULL,
	token_id   text COLLATE "C" NOT NULL DEFAULT '',
	agent_id   text COLLATE "C" NOT NULL DEFAULT '',
	handle     text NOT NULL DEFAULT '',
	error      text NOT NULL DEFAULT '',
	deadline   timestamptz NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL
);
CREATE INDEX workers_provider_state ON workers (provider, state);
