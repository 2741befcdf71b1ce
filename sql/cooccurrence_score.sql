-- Co-occurrence scoring (NoteLLM, Zhang et al. WWW 2024, section 4.1).
--
-- Portable SQL: the same text runs on Spark SQL 4.x (jobs/cooccurrence.py) and
-- DuckDB (bench/bench_cooccurrence.py). Only ANSI constructs both share are
-- used: CTE-free temp views, CASE, window ROW_NUMBER, GROUP BY, UNION ALL.
--
-- Input view   scoring_events(user_key BIGINT, note_key BIGINT, event_us BIGINT, event_type VARCHAR)
--              validated events of the window (dense integer keys; event_us =
--              microseconds since the epoch, UTC). note_key order = note_id order.
-- Output views cooc_cap_stats, cooc_pair_candidates, cooc_related (see below).
--
-- Parameters ({{name}}, rendered as validated literals by jobs/sql_template.py):
--   view_types, click_types   quoted lists of event types
--   max_events_per_user       cap: keep each user's N most recent events
--   max_gap_us                max microseconds between the view of A and the click of B
--   score_scale               fixed-point scale of the score (10^12)
--   lower_units, upper_units  bounds l and u, in score units (round(l * scale))
--   top                       t: related notes kept per source note
--
-- Definition (one user u, window W, after the cap):
--   N_u        = number of distinct notes u clicked (event_type in click_types)
--   (A,B) in P_u  iff  A != B and there are events (u, A, t1) with type in view_types
--                  and (u, B, t2) with type in click_types, 0 < t2 - t1 <= max_gap
--                  (strictly later: equal timestamps never pair, in either direction)
--   s(A->B)    = sum over users u with (A,B) in P_u of 1/N_u   (each user once per pair)
--   n_users    = |{u : (A,B) in P_u}|
-- 1/N_u is accumulated in fixed point, floor(score_scale / N_u) units per user,
-- so sums are exact integers: order-independent, reproducible across engines,
-- and ties compare exactly.

-- 1. role flags and recency rank per user (deterministic: time, note, type, all descending)
CREATE OR REPLACE TEMPORARY VIEW cooc_ranked_events AS
SELECT user_key, note_key, event_us,
       CASE WHEN event_type IN ({{view_types}}) THEN 1 ELSE 0 END AS is_view,
       CASE WHEN event_type IN ({{click_types}}) THEN 1 ELSE 0 END AS is_click,
       ROW_NUMBER() OVER (PARTITION BY user_key
                          ORDER BY event_us DESC, note_key DESC, event_type DESC) AS recency_rank
FROM scoring_events
WHERE event_type IN ({{view_types}}) OR event_type IN ({{click_types}});

-- 2. the cap: how many events it removes (a cheap aggregate, no sort)
CREATE OR REPLACE TEMPORARY VIEW cooc_cap_stats AS
SELECT COALESCE(SUM(CASE WHEN n_events > {{max_events_per_user}} THEN n_events - {{max_events_per_user}} ELSE 0 END), 0) AS capped_events,
       COUNT(*) AS users_in,
       COALESCE(SUM(n_events), 0) AS events_in
FROM (SELECT user_key, COUNT(*) AS n_events
      FROM scoring_events
      WHERE event_type IN ({{view_types}}) OR event_type IN ({{click_types}})
      GROUP BY user_key) per_user;

CREATE OR REPLACE TEMPORARY VIEW cooc_capped_events AS
SELECT user_key, note_key, event_us, is_view, is_click
FROM cooc_ranked_events
WHERE recency_rank <= {{max_events_per_user}};

-- 3. per-user weight 1/N_u in fixed point
CREATE OR REPLACE TEMPORARY VIEW cooc_user_weights AS
SELECT user_key,
       COUNT(DISTINCT note_key) AS n_clicked,
       CAST(FLOOR(CAST({{score_scale}} AS DOUBLE) / CAST(COUNT(DISTINCT note_key) AS DOUBLE)) AS BIGINT) AS weight_units
FROM cooc_capped_events
WHERE is_click = 1
GROUP BY user_key;

-- 4. views and clicks, deduplicated, with a time bucket of width max_gap so the
--    per-user pairing is an equi-join on (user, bucket) instead of a quadratic
--    join on user: a click can only pair with a view of its own or the previous bucket.
CREATE OR REPLACE TEMPORARY VIEW cooc_views AS
SELECT DISTINCT user_key, note_key, event_us,
       CAST(FLOOR(CAST(event_us AS DOUBLE) / CAST({{max_gap_us}} AS DOUBLE)) AS BIGINT) AS gap_bucket
FROM cooc_capped_events
WHERE is_view = 1;

-- Each click carries its user's weight (one join on the per-user table, not
-- one on the much larger set of pairs).
CREATE OR REPLACE TEMPORARY VIEW cooc_clicks AS
SELECT c.user_key, c.note_key, c.event_us, c.gap_bucket, w.weight_units
FROM (SELECT DISTINCT user_key, note_key, event_us,
             CAST(FLOOR(CAST(event_us AS DOUBLE) / CAST({{max_gap_us}} AS DOUBLE)) AS BIGINT) AS gap_bucket
      FROM cooc_capped_events
      WHERE is_click = 1) c
JOIN cooc_user_weights w ON w.user_key = c.user_key;

-- 5. P_u: each (user, A, B) once (weight_units depends on the user only)
CREATE OR REPLACE TEMPORARY VIEW cooc_user_pairs AS
SELECT DISTINCT v.user_key, v.note_key AS src_key, c.note_key AS dst_key, c.weight_units
FROM (SELECT user_key, note_key, event_us, gap_bucket AS join_bucket FROM cooc_views
      UNION ALL
      SELECT user_key, note_key, event_us, gap_bucket + 1 AS join_bucket FROM cooc_views) v
JOIN cooc_clicks c
  ON c.user_key = v.user_key AND c.gap_bucket = v.join_bucket
WHERE c.event_us > v.event_us
  AND c.event_us - v.event_us <= {{max_gap_us}}
  AND c.note_key <> v.note_key;

-- 6. s(A->B) and n_users for every candidate pair (before the bounds)
CREATE OR REPLACE TEMPORARY VIEW cooc_pair_candidates AS
SELECT src_key, dst_key, SUM(weight_units) AS score_units, COUNT(*) AS n_users
FROM cooc_user_pairs
GROUP BY src_key, dst_key;

-- 7. bounds l <= s <= u, then the top t per source note
--    (score desc, n_users desc, dst note id asc)
CREATE OR REPLACE TEMPORARY VIEW cooc_related AS
SELECT src_key, dst_key, score_units, n_users, pair_rank
FROM (SELECT src_key, dst_key, score_units, n_users,
             ROW_NUMBER() OVER (PARTITION BY src_key
                                ORDER BY score_units DESC, n_users DESC, dst_key ASC) AS pair_rank
      FROM cooc_pair_candidates
      WHERE score_units >= {{lower_units}} AND score_units <= {{upper_units}}) bounded
WHERE pair_rank <= {{top}};
