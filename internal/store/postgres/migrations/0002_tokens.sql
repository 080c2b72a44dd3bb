-- API tokens: only their SHA-256 hashes (hex), by which requests find them.

CREATE TABLE api_tokens (
	id           text COLLATE "C" PRIMARY KEY,
	name         text NOT NULL UNIQUE,
	role         text NOT NULL CHECK (role IN ('viewer', 'developer', 'admin')),
	hash         text COLLATE "C" NOT NULL UNIQUE,
	created_at   timestamptz NOT NULL,
	last_used_at timestamptz
);
