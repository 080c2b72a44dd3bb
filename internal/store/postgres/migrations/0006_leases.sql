-- Named, expiring locks that elect one server for a task: the row's holder
-- has it until expires_at.

CREATE TABLE leases (
	name       text COLLATE "C" PRIMARY KEY,
	holder     text COLLATE "C" NOT NULL,
	expires_at timestamptz NOT NULL
);
