-- Named, expiring locks that elect one server for a task: the row's holder
-- has it until expires_at.

CREATE TABLE leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at TEXT NOT NULL
) STRICT;
