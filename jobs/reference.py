"""Plain-Python reference of the co-occurrence score (small, obviously correct).

It restates the definition in ``sql/cooccurrence_score.sql`` with loops over
a list of events, for tests (Spark must produce exactly the same pairs) and
for reading. Quadratic per user: use it on tiny logs only.

    N_u      = |{notes u clicked}|                       (after the cap)
    P_u      = {(A,B): A != B, exists view (u,A,t1), click (u,B,t2), 0 < t2 - t1 <= gap}
    s(A->B)  = sum_{u : (A,B) in P_u} 1/N_u,  each term floor(SCALE / N_u) / SCALE
    related(A) = top t of {B : l <= s(A->B) <= u} by (s desc, n_users desc, B asc)
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

SCORE_SCALE = 10 ** 12


@dataclass(frozen=True)
class Event:
    user_id: str
    note_id: str
    event_type: str
    event_us: int          # microseconds since the epoch, UTC


@dataclass(frozen=True)
class Pair:
    src_note_id: str
    dst_note_id: str
    score_units: int
    n_users: int
    rank: int

    @property
    def score(self) -> float:
        return self.score_units / SCORE_SCALE


def weight_units(n_clicked: int) -> int:
    # Same IEEE double division + floor as the SQL, so the units are identical.
    return int(math.floor(float(SCORE_SCALE) / float(n_clicked)))


def bound_units(value: float) -> int:
    return int(round(value * SCORE_SCALE))


def cap_events(events: list[Event], max_events_per_user: int | None) -> tuple[list[Event], int]:
    """Keep each user's most recent N events (ordered by time, note, type, all
    descending); return (kept, number removed)."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    kept, removed = [], 0
    for user_events in by_user.values():
        user_events.sort(key=lambda e: (e.event_us, e.note_id, e.event_type), reverse=True)
        limit = len(user_events) if max_events_per_user is None else max_events_per_user
        kept.extend(user_events[:limit])
        removed += max(0, len(user_events) - limit)
    return kept, removed


def candidate_scores(events: Iterable[Event], view_types, click_types, max_events_per_user: int | None,
                     max_gap_us: int | None) -> tuple[dict[tuple[str, str], tuple[int, int]], int]:
    """{(A, B): (score_units, n_users)} for every candidate pair, and the cap count."""
    view_types, click_types = set(view_types), set(click_types)
    used = [e for e in events if e.event_type in view_types or e.event_type in click_types]
    used, capped = cap_events(used, max_events_per_user)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in used:
        by_user[e.user_id].append(e)
    scores: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for user_events in by_user.values():
        clicked = {e.note_id for e in user_events if e.event_type in click_types}
        if not clicked:
            continue
        w = weight_units(len(clicked))
        pairs = set()
        for v in user_events:
            if v.event_type not in view_types:
                continue
            for c in user_events:
                if c.event_type not in click_types or c.note_id == v.note_id:
                    continue
                gap = c.event_us - v.event_us
                if gap > 0 and (max_gap_us is None or gap <= max_gap_us):
                    pairs.add((v.note_id, c.note_id))
        for pair in pairs:
            scores[pair][0] += w
            scores[pair][1] += 1
    return {k: (v[0], v[1]) for k, v in scores.items()}, capped


def related_pairs(events: Iterable[Event], view_types=("view", "click"), click_types=("click",),
                  upper: float = 30.0, lower: float = 0.01, top: int = 10,
                  max_events_per_user: int | None = 200, max_gap_us: int | None = None) -> list[Pair]:
    scores, _ = candidate_scores(events, view_types, click_types, max_events_per_user, max_gap_us)
    lo, hi = bound_units(lower), bound_units(upper)
    by_src: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for (a, b), (units, n) in scores.items():
        if lo <= units <= hi:
            by_src[a].append((b, units, n))
    out = []
    for a in sorted(by_src):
        ranked = sorted(by_src[a], key=lambda x: (-x[1], -x[2], x[0]))[:top]
        out.extend(Pair(a, b, units, n, i + 1) for i, (b, units, n) in enumerate(ranked))
    return out
