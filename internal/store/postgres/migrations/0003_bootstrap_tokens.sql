-- Bootstrap tokens of agents: only their SHA-256 hashes (hex); each is spent
-- once (used_at), or expires unspent.

CREATE TABLE bootstrap_tokens (
	id         text COLLATE "C" PRIMARY KEY,
	hash       text COLLATE "C" NOT NULL UNIQUE,
	labels     text[] NOT NULL DEFAULT '{}',
	created_by text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	used_at    timestamptz,
	used_by    text NOT NULL DEFAULT ''
);
