-- Validation and classification of one window's raw events (Spark SQL dialect).
--
-- Input views
--   events_input(user_id STRING, note_id STRING, event_type STRING,
--                event_time TIMESTAMP, event_time_text STRING, source STRING)
--       every row of every events file read for the window; event_time is NULL
--       where the text did not parse; event_time_text = the original text of a
--       landing file's time (NULL for typed contract files); source = the file
--       the row came from.
--   note_keys(note_id STRING, note_key BIGINT)   dense keys in note_id order
-- Parameters: known_types, used_types (quoted lists), window_start_ts,
--   window_end_ts (quoted ISO timestamps; the window is [start, end)).
--
-- Every input row gets exactly one status, so the counts reconcile:
--   events_in = quarantined + outside_window + ignored_type + capped + used
-- (capped and used are split later, by the scoring SQL's cap).

CREATE OR REPLACE TEMPORARY VIEW events_classified AS
SELECT e.user_id, e.note_id, e.event_type, e.event_time, e.event_time_text, e.source,
       k.note_key,
       CASE
         WHEN e.user_id IS NULL OR TRIM(e.user_id) = '' THEN 'null_user'
         WHEN e.note_id IS NULL OR TRIM(e.note_id) = '' THEN 'null_note'
         WHEN e.event_time IS NULL THEN 'bad_timestamp'
         WHEN e.event_type IS NULL OR e.event_type NOT IN ({{known_types}}) THEN 'unknown_event_type'
         WHEN k.note_key IS NULL THEN 'unknown_note'
       END AS quarantine_reason
FROM events_input e
LEFT JOIN note_keys k ON k.note_id = e.note_id;

-- One row per input row, narrowed to what the later steps read. The job
-- computes this view once (the one scan of the raw files): it counts every
-- status and reason while the rows stream through, and stores only the
-- in-scope and quarantined rows, which the quarantine output, the user keys
-- and the scoring events then read. The raw text of a row (source file, JSON of its fields) is
-- only kept for quarantined rows; every other row carries NULLs there, which
-- cost next to nothing in the stored (checkpointed) rows.
CREATE OR REPLACE TEMPORARY VIEW events_status AS
SELECT user_id, note_key, unix_micros(event_time) AS event_us, event_type, status, quarantine_reason,
       CASE WHEN status = 'quarantined' THEN source END AS source,
       CASE WHEN status = 'quarantined'
            THEN to_json(named_struct('user_id', user_id, 'note_id', note_id,
                                      'event_type', event_type,
                                      'event_time', COALESCE(event_time_text,
                                                             date_format(event_time, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"))))
            END AS raw
FROM (SELECT *,
             CASE
               WHEN quarantine_reason IS NOT NULL THEN 'quarantined'
               WHEN event_time < TIMESTAMP {{window_start_ts}} OR event_time >= TIMESTAMP {{window_end_ts}} THEN 'outside_window'
               WHEN event_type NOT IN ({{used_types}}) THEN 'ignored_type'
               ELSE 'in_scope'
             END AS status
      FROM events_classified) classified;

-- The users with in-scope events. The job gives them BIGINT keys in user_id
-- order without a single-partition step (jobs.spark_input.ordered_keys: range
-- partitioning, then partition index and position) and defines ``user_keys``
-- (user_id, user_key), so the scoring joins and sorts on integers rather than
-- strings. Its row count is the number of users (the cap keeps at least one
-- event of every user), and it is small enough to broadcast for most logs.
CREATE OR REPLACE TEMPORARY VIEW user_ids AS
SELECT DISTINCT user_id FROM events_status WHERE status = 'in_scope';

CREATE OR REPLACE TEMPORARY VIEW scoring_events AS
SELECT u.user_key, e.note_key, e.event_us, e.event_type
FROM events_status e
JOIN user_keys u ON u.user_id = e.user_id
WHERE e.status = 'in_scope';

CREATE OR REPLACE TEMPORARY VIEW events_quarantine AS
SELECT source, CAST(NULL AS BIGINT) AS row_number, quarantine_reason AS reason, raw
FROM events_status
WHERE status = 'quarantined';
