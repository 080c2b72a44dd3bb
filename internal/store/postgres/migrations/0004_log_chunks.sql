-- Job output in chunks of lines (internal/store/postgres/logchunk.go), one
-- row per Logs.Append rather than one per line, which made a step that
-- prints a million lines take many seconds to store. The chunks of a job
-- cover disjoint ranges of seq, [first_seq, last_seq].
CREATE TABLE log_chunks (
	job_id    text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	first_seq bigint NOT NULL,
	last_seq  bigint NOT NULL CHECK (last_seq >= first_seq),
	lines     bytea NOT NULL,
	PRIMARY KEY (job_id, first_seq)
);
-- Chunks are compressed already (or not worth it): MAIN keeps them in the
-- row where they fit, rather than in the TOAST table.
ALTER TABLE log_chunks ALTER lines SET STORAGE MAIN;

-- The lines stored so far, in JSON chunks of up to 128 seqs.
INSERT INTO log_chunks (job_id, first_seq, last_seq, lines)
SELECT job_id, min(seq), max(seq), convert_to(json_agg(json_build_array(seq, step_id, stream, content,
	(extract(epoch FROM logged_at) * 1000000)::bigint) ORDER BY seq)::text, 'UTF8')
FROM step_logs GROUP BY job_id, seq >> 7;

DROP TABLE step_logs;
