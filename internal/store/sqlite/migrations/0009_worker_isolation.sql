-- What keeps a worker's jobs from the server's files: set for the server's
-- own agent ("user oxide-runner (uid 998)", or "none: why").
ALTER TABLE workers ADD COLUMN isolation TEXT NOT NULL DEFAULT '';
