-- The straightforward version of the co-occurrence scoring: the baseline the
-- issue's performance target was set against (string ids, a generic self-join
-- of each user's capped events, no time buckets, no dense keys). It is a
-- benchmark reference only (bench/bench_cooccurrence.py runs it in DuckDB);
-- the job runs sql/cooccurrence_score.sql. Both compute the same definition
-- (see that file's header), so their outputs must be identical row for row:
-- same cap order (time, note id, type, all descending; note_key order is
-- note_id order), same fixed-point 1/N_u, same bounds and tie-breaking.
-- Equal on contract input only (what the bench generates): the job's quarantine
-- (blank ids, Unicode-space trimming, landing-format times) is not replicated.
--
-- Input view  window_events(user_id VARCHAR, note_id VARCHAR, event_us BIGINT, event_type VARCHAR)
--             the window's valid events of known notes (string ids).
-- Output view straightforward_related(src_note_id, dst_note_id, score_units, n_users, pair_rank)
-- Parameters: as sql/cooccurrence_score.sql.

CREATE OR REPLACE TEMPORARY VIEW sf_capped AS
SELECT user_id, note_id, event_us, event_type
FROM (SELECT user_id, note_id, event_us, event_type,
             ROW_NUMBER() OVER (PARTITION BY user_id
                                ORDER BY event_us DESC, note_id DESC, event_type DESC) AS recency_rank
      FROM window_events
      WHERE event_type IN ({{view_types}}) OR event_type IN ({{click_types}})) ranked
WHERE recency_rank <= {{max_events_per_user}};

CREATE OR REPLACE TEMPORARY VIEW sf_weights AS
SELECT user_id,
       CAST(FLOOR(CAST({{score_scale}} AS DOUBLE) / CAST(COUNT(DISTINCT note_id) AS DOUBLE)) AS BIGINT) AS weight_units
FROM sf_capped
WHERE event_type IN ({{click_types}})
GROUP BY user_id;

-- The generic self-join: every (view, later click) of the same user, filtered.
CREATE OR REPLACE TEMPORARY VIEW sf_user_pairs AS
SELECT DISTINCT v.user_id, v.note_id AS src_note_id, c.note_id AS dst_note_id
FROM sf_capped v
JOIN sf_capped c ON c.user_id = v.user_id
WHERE v.event_type IN ({{view_types}})
  AND c.event_type IN ({{click_types}})
  AND c.event_us > v.event_us
  AND c.event_us - v.event_us <= {{max_gap_us}}
  AND c.note_id <> v.note_id;

CREATE OR REPLACE TEMPORARY VIEW sf_candidates AS
SELECT p.src_note_id, p.dst_note_id, SUM(w.weight_units) AS score_units, COUNT(*) AS n_users
FROM sf_user_pairs p
JOIN sf_weights w ON w.user_id = p.user_id
GROUP BY p.src_note_id, p.dst_note_id;

CREATE OR REPLACE TEMPORARY VIEW straightforward_related AS
SELECT src_note_id, dst_note_id, score_units, n_users, pair_rank
FROM (SELECT src_note_id, dst_note_id, score_units, n_users,
             ROW_NUMBER() OVER (PARTITION BY src_note_id
                                ORDER BY score_units DESC, n_users DESC, dst_note_id ASC) AS pair_rank
      FROM sf_candidates
      WHERE score_units >= {{lower_units}} AND score_units <= {{upper_units}}) bounded
WHERE pair_rank <= {{top}};
