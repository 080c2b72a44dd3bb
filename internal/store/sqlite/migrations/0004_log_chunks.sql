-- Job output in chunks of lines (internal/store/sqlite/logchunk.go), one row
-- per Logs.Append rather than one per line, which made a step that prints a
-- million lines take seconds to store. The chunks of a job cover disjoint
-- ranges of seq, [first_seq, last_seq].
CREATE TABLE log_chunks (
	job_id    TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	first_seq INTEGER NOT NULL,
	last_seq  INTEGER NOT NULL CHECK (last_seq >= first_seq),
	lines     BLOB NOT NULL,
	PRIMARY KEY (job_id, first_seq)
) STRICT;

-- The lines stored so far, in JSON chunks of up to 128 seqs.
INSERT INTO log_chunks (job_id, first_seq, last_seq, lines)
SELECT job_id, min(seq), max(seq),
	CAST(json_group_array(json_array(seq, step_id, stream, content, logged_at) ORDER BY seq) AS BLOB)
FROM step_logs GROUP BY job_id, seq >> 7;

DROP TABLE step_logs;
