-- Bootstrap tokens of agents: only their SHA-256 hashes (hex); each is spent
-- once (used_at), or expires unspent.

CREATE TABLE bootstrap_tokens (
	id         TEXT PRIMARY KEY,
	hash       TEXT NOT NULL UNIQUE,
	labels     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(labels)),
	created_by TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	expires_at TEXT NOT NULL,
	used_at    TEXT,
	used_by    TEXT NOT NULL DEFAULT ''
) STRICT;
