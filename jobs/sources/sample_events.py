"""The sample's click log: sessions, impressions, views, clicks and bots.

Part of the deterministic sample generator (``jobs.sources.sample``); the
behaviour model and its parameters are described in
``jobs.sources.sample_world``. Everything is vectorised numpy; all draws come
from ``numpy.random.default_rng([seed, 2])`` in a fixed order, so the same
seed and settings give the same log.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.config import SampleConfig
from jobs.sources import MICROS_PER_DAY
from jobs.sources.sample_world import (
    BOT_SHARE_OF_EVENTS,
    EVENT_TYPE_NAMES,
    FEED_COMMUNITY_SHARE,
    FORMATS,
    HOURLY_PROFILE,
    IMPRESSION_OFF_TOPIC,
    INTEREST_WEIGHTS,
    MEAN_IMPRESSIONS,
    P_CLICK_OTHER_FORMAT,
    P_CLICK_OWN_FORMAT,
    P_VIEW_OTHER_FORMAT,
    P_VIEW_OWN_FORMAT,
    SESSION_OFF_TOPIC,
    TOPICS,
    World,
    _micros,
    user_ids,
)


def _weighted_pick(rng: np.random.Generator, cumulative: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Pick index i in [lo, hi) with probability proportional to the weight
    whose running sum is ``cumulative`` (vectorised inverse-CDF sampling)."""
    base = np.where(lo > 0, cumulative[np.maximum(lo - 1, 0)], 0.0)
    top = cumulative[hi - 1]
    u = base + rng.random(len(lo)) * (top - base)
    idx = np.searchsorted(cumulative, u, side="right")
    return np.clip(idx, lo, hi - 1)


def _pick_created_before(rng: np.random.Generator, world: World, group_of_note: np.ndarray,
                         group: np.ndarray, when: np.ndarray) -> np.ndarray:
    """For each (group[i], when[i]): a note of that group created at or before when[i],
    popularity-weighted; -1 where the group has no such note yet."""
    key_scale = np.int64(1) << np.int64(52)
    base_key = np.int64(world.created_us.min())
    note_key = group_of_note.astype(np.int64) * key_scale + (world.created_us - base_key)
    order = np.argsort(note_key, kind="stable")
    sorted_key = note_key[order]
    cum_pop = np.cumsum(world.popularity[order])
    lo = np.searchsorted(sorted_key, group.astype(np.int64) * key_scale)
    hi = np.searchsorted(sorted_key, group.astype(np.int64) * key_scale + (when - base_key), side="right")
    empty = hi <= lo
    lo = np.minimum(lo, len(order) - 1)            # keep empty groups' bounds in range
    picked = order[_weighted_pick(rng, cum_pop, lo, np.maximum(hi, lo + 1))]
    return np.where(empty, -1, picked)

def _n_sessions(cfg: SampleConfig) -> int:
    """Sessions that make about ``cfg.events`` events with the bots' share."""
    # Expected views and clicks per impression: an impression is of the user's format with
    # probability about FEED_COMMUNITY_SHARE + (1 - FEED_COMMUNITY_SHARE) / len(FORMATS).
    p_own = FEED_COMMUNITY_SHARE + (1.0 - FEED_COMMUNITY_SHARE) / len(FORMATS)
    p_view = p_own * P_VIEW_OWN_FORMAT + (1 - p_own) * P_VIEW_OTHER_FORMAT
    p_click = p_own * P_VIEW_OWN_FORMAT * P_CLICK_OWN_FORMAT + (1 - p_own) * P_VIEW_OTHER_FORMAT * P_CLICK_OTHER_FORMAT
    per_impression = 1.0 + p_view + p_click
    organic_target = cfg.events * (1.0 - BOT_SHARE_OF_EVENTS)
    n_sessions = int(round(organic_target / per_impression / MEAN_IMPRESSIONS))
    return n_sessions


def _sessions(rng: np.random.Generator, cfg: SampleConfig, world: World, n_sessions: int) -> tuple:
    """Sessions: who (by activity), which topic (an interest, or off-topic), when (diurnal)."""
    start_us = _micros(cfg.window_start)
    n_topics = len(TOPICS)
    cum_activity = np.cumsum(world.user_activity)
    s_user = np.searchsorted(cum_activity, rng.random(n_sessions) * cum_activity[-1], side="right")
    s_user = np.minimum(s_user, len(cum_activity) - 1)
    # A user's first interest is their main one: INTEREST_WEIGHTS over the interests they have.
    weights = np.where(np.arange(3)[None, :] < world.user_n_interests[s_user][:, None],
                       np.asarray(INTEREST_WEIGHTS)[None, :], 0.0)
    cum = np.cumsum(weights, axis=1)
    s_pick = (rng.random(n_sessions)[:, None] * cum[:, -1:] >= cum).sum(axis=1)
    s_topic = world.user_interests[s_user, s_pick]
    off = rng.random(n_sessions) < SESSION_OFF_TOPIC
    s_topic[off] = rng.integers(n_topics, size=int(off.sum()))
    hour_p = HOURLY_PROFILE / HOURLY_PROFILE.sum()
    s_day = rng.integers(cfg.days, size=n_sessions)
    s_hour = rng.choice(24, size=n_sessions, p=hour_p)
    s_start = (start_us + s_day * MICROS_PER_DAY + s_hour * 3_600_000_000
               + rng.integers(0, 3_600_000_000, size=n_sessions))
    return s_user, s_topic, s_start


def _impressions(rng: np.random.Generator, world: World, s_user, s_topic, s_start) -> tuple:
    """Impressions: a Poisson number per session, a few seconds apart, of notes
    already created. Returns (user, note, time, user's format) per impression."""
    n_sessions, n_topics = len(s_user), len(TOPICS)
    n_imp = 1 + rng.poisson(MEAN_IMPRESSIONS - 1, size=n_sessions)
    sess = np.repeat(np.arange(n_sessions), n_imp)
    n_i = len(sess)
    imp_user = s_user[sess]
    imp_topic = s_topic[sess]
    noisy = rng.random(n_i) < IMPRESSION_OFF_TOPIC
    imp_topic[noisy] = rng.integers(n_topics, size=int(noisy.sum()))
    gaps = rng.exponential(20_000_000.0, size=n_i).astype(np.int64)   # ~20 s between impressions
    first = np.concatenate([[0], np.cumsum(n_imp)[:-1]])
    cum_gaps = np.cumsum(gaps)
    imp_time = s_start[sess] + (cum_gaps - cum_gaps[first][sess])   # first impression at session start

    # Note choice: popularity-weighted among notes created before the impression, of the
    # session's topic, or (FEED_COMMUNITY_SHARE) of the topic and the user's format.
    n_formats = len(FORMATS)
    from_community = rng.random(n_i) < FEED_COMMUNITY_SHARE
    u_fmt = world.user_community[imp_user]
    topic_pick = _pick_created_before(rng, world, world.topic, imp_topic, imp_time)
    cell_pick = _pick_created_before(rng, world, world.topic * n_formats + world.fmt,
                                     imp_topic * n_formats + u_fmt, imp_time)
    # A (topic, format) cell with no note yet falls back to the topic (which always has one).
    imp_note = np.where(from_community & (cell_pick >= 0), cell_pick, topic_pick)
    return imp_user, imp_note, imp_time, u_fmt


def _bots(rng: np.random.Generator, cfg: SampleConfig, world: World) -> tuple:
    """Bots: clicks on uniformly random notes already created, at any time."""
    start_us, end_us = _micros(cfg.window_start), _micros(cfg.window_end)
    bot_n = int(round(cfg.events * BOT_SHARE_OF_EVENTS))
    bot_user = world.bots[rng.integers(len(world.bots), size=bot_n)]
    bot_time = rng.integers(start_us, end_us, size=bot_n)
    by_created = np.argsort(world.created_us, kind="stable")
    n_created = np.searchsorted(world.created_us[by_created], bot_time, side="right")
    n_created = np.maximum(n_created, 1)
    bot_note = by_created[(rng.random(bot_n) * n_created).astype(np.int64)]
    return bot_user, bot_note, bot_time


def generate_events(cfg: SampleConfig, world: World) -> pa.Table:
    """The click log as an EVENTS table sorted by event_time (ties by
    generation order). ``user_id``/``note_id``/``event_type`` come out
    dictionary-encoded; the writers cast them to plain strings."""
    rng = np.random.default_rng([cfg.seed, 2])     # every draw below, in this order, makes the log
    end_us = _micros(cfg.window_end)
    s_user, s_topic, s_start = _sessions(rng, cfg, world, _n_sessions(cfg))
    imp_user, imp_note, imp_time, u_fmt = _impressions(rng, world, s_user, s_topic, s_start)
    n_i = len(imp_user)
    # Funnel: impression -> view -> click, each a little later; readers mostly open and
    # click notes written in their community's format.
    own = world.fmt[imp_note] == u_fmt
    viewed = rng.random(n_i) < np.where(own, P_VIEW_OWN_FORMAT, P_VIEW_OTHER_FORMAT)
    clicked = viewed & (rng.random(n_i) < np.where(own, P_CLICK_OWN_FORMAT, P_CLICK_OTHER_FORMAT))
    view_delay = rng.integers(500_000, 5_000_000, size=n_i)
    click_delay = view_delay + rng.integers(1_000_000, 60_000_000, size=n_i)
    bot_user, bot_note, bot_time = _bots(rng, cfg, world)
    bot_n = len(bot_user)

    users = np.concatenate([imp_user, imp_user[viewed], imp_user[clicked], bot_user])
    notes = np.concatenate([imp_note, imp_note[viewed], imp_note[clicked], bot_note])
    kinds = np.concatenate([np.zeros(n_i, np.int8), np.ones(int(viewed.sum()), np.int8),
                            np.full(int(clicked.sum()), 2, np.int8), np.full(bot_n, 2, np.int8)])
    times = np.concatenate([imp_time, imp_time[viewed] + view_delay[viewed],
                            imp_time[clicked] + click_delay[clicked], bot_time])
    # The log is cut at the window end: late session tails are dropped (clipping them to the
    # last microsecond instead would create exact duplicate events).
    in_window = np.flatnonzero(times < end_us)
    users, notes, kinds, times = users[in_window], notes[in_window], kinds[in_window], times[in_window]
    by_time = np.argsort(times, kind="stable")
    return pa.table({
        "user_id": pa.DictionaryArray.from_arrays(pa.array(users[by_time].astype(np.int32)),
                                                  pa.array(user_ids(cfg.users), pa.string())),
        "note_id": pa.DictionaryArray.from_arrays(pa.array(notes[by_time].astype(np.int32)),
                                                  world.notes.column("note_id").combine_chunks()),
        "event_type": pa.DictionaryArray.from_arrays(pa.array(kinds[by_time]),
                                                     pa.array(EVENT_TYPE_NAMES, pa.string())),
        "event_time": pa.array(times[by_time], pa.timestamp("us", tz="UTC")),
    })
