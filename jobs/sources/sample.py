"""Deterministic sample generator: notes and a click log with real structure.

Used by tests (a few hundred notes), the demo and benchmarks (up to 10M
events). Everything on the event path is vectorised numpy/pyarrow; only the
note texts are formatted per note (there are orders of magnitude fewer notes
than events).

Model of the world
------------------
* A fixed set of named topics (``TOPICS``): each has a category (several
  topics share one), a vocabulary and hashtags. A note belongs to one topic;
  its title/content are template sentences filled with topic words (about 8%
  of filler words come from another topic: cross-topic noise); it carries 1-5
  of its topic's hashtags.
* Each note is also written in one of a few formats (``FORMATS``: review,
  beginner guide, budget tips, diary, question, story). A format owns its title
  templates and some sentences, made of generic words only, so text similarity
  ranks notes by topic first and barely by format.
* Notes are created over ``[start - backlog_days, end)``: half before the
  event window (the catalogue), half during it (so a later test period has
  new notes). A note only receives events after its ``created_at``.
* Each note has a Zipf popularity weight (``w = 1 / rank**ZIPF_S`` over a
  random rank within its topic).
* Users have 1-3 interest topics (the first one the main one,
  ``INTEREST_WEIGHTS``), a log-normal activity level and one reader
  community: the format they prefer, whatever the topic. They browse in
  sessions: a session picks one of the user's interests (or a random topic
  with probability ``SESSION_OFF_TOPIC``) and shows impressions of notes of
  that topic drawn by popularity among notes already created
  (``FEED_COMMUNITY_SHARE`` of them from the user's own format,
  ``IMPRESSION_OFF_TOPIC`` random-topic noise). Readers mostly view and click
  notes of their own format (``P_VIEW_*``, ``P_CLICK_*``). So a user's
  co-clicked notes share a format far more often than a topic alone explains,
  across topics (over a day a user reads several of their interests) and
  within one (sub-communities of a topic whose notes share no topic word the
  others lack): the relation co-occurrence mining recovers and text alone
  does not show.
* A few hyper-active users (bots) click random notes of any topic.
* Sessions start on a diurnal profile (busier evenings) over ``days`` days
  ending at ``end_date`` (exclusive end = ``end_date + 1 day``).

Same seed and arguments give byte-identical Parquet files.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from notellm.contracts import (EVENTS, EVENTS_LANDING, NOTES, NOTES_LANDING, mark_success,
                               write_table)
from jobs.sources import MICROS_PER_DAY, split_by_day

# --------------------------------------------------------------------------
# the world: topics


@dataclasses.dataclass(frozen=True)
class Topic:
    name: str
    category: str
    words: tuple[str, ...]
    hashtags: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic("coffee", "food", ("espresso", "latte", "pour-over", "grinder", "beans", "roast", "crema",
                             "barista", "cold brew", "aeropress", "milk foam", "arabica"),
          ("coffee", "espresso", "coffeetime", "latteart", "homebarista", "specialtycoffee")),
    Topic("baking", "food", ("sourdough", "starter", "croissant", "oven", "butter", "flour", "crumb",
                             "proofing", "brioche", "dough", "cinnamon roll", "banana bread"),
          ("baking", "sourdough", "homebaker", "breadporn", "pastry", "bakeoff")),
    Topic("street-food", "food", ("noodles", "dumplings", "night market", "skewers", "bao", "hotpot",
                                  "spicy sauce", "food stall", "fried rice", "tacos", "ramen", "vendor"),
          ("streetfood", "foodie", "nightmarket", "eatlocal", "yummy", "foodtour")),
    Topic("cycling", "sports", ("bike", "gravel", "saddle", "cadence", "climb", "peloton", "helmet",
                                "chain", "road bike", "tubeless", "bikepacking", "groupset"),
          ("cycling", "bikelife", "gravelbike", "roadcycling", "cyclinglife", "strava")),
    Topic("running", "sports", ("marathon", "tempo run", "trail", "sneakers", "pace", "intervals",
                                "long run", "5k", "recovery", "half marathon", "stride", "race day"),
          ("running", "marathontraining", "runnersofinstagram", "trailrunning", "runhappy")),
    Topic("yoga", "sports", ("asana", "mat", "breathing", "flexibility", "vinyasa", "meditation",
                             "downward dog", "balance", "core", "stretch", "mindfulness", "flow"),
          ("yoga", "yogaeveryday", "yogainspiration", "mindfulness", "stretching")),
    Topic("skincare", "beauty", ("serum", "moisturizer", "sunscreen", "retinol", "cleanser", "toner",
                                 "niacinamide", "hydration", "acne", "barrier", "spf", "double cleanse"),
          ("skincare", "skincareroutine", "glowingskin", "spf", "selfcare", "kbeauty")),
    Topic("makeup", "beauty", ("lipstick", "foundation", "eyeliner", "blush", "palette", "mascara",
                               "contour", "concealer", "brushes", "highlighter", "brow gel", "primer"),
          ("makeup", "makeuptutorial", "motd", "beautyblogger", "lipstick", "glam")),
    Topic("travel-japan", "travel", ("kyoto", "tokyo", "shinkansen", "temple", "onsen", "ryokan",
                                     "sakura", "osaka", "izakaya", "matcha", "rail pass", "shrine"),
          ("japan", "kyoto", "tokyotravel", "japantrip", "sakura", "visitjapan")),
    Topic("travel-europe", "travel", ("paris", "lisbon", "interrail", "old town", "museum", "canal",
                                      "alps", "cafe terrace", "gelato", "hostel", "cathedral", "tram"),
          ("europetravel", "wanderlust", "interrail", "citybreak", "travelgram")),
    Topic("hiking", "outdoors", ("trailhead", "summit", "backpack", "boots", "ridge", "waterfall",
                                 "campsite", "switchbacks", "map", "trekking poles", "alpine lake", "tent"),
          ("hiking", "mountains", "outdoors", "hikingadventures", "camping", "naturelovers")),
    Topic("gardening", "home", ("tomatoes", "compost", "seedlings", "raised bed", "pruning", "soil",
                                "succulents", "watering", "mulch", "herbs", "balcony garden", "basil"),
          ("gardening", "urbangarden", "growyourown", "plantsofinstagram", "gardenlife")),
    Topic("interior", "home", ("sofa", "rug", "shelves", "lighting", "minimalist", "wallpaper",
                               "plants corner", "bedroom", "paint color", "small apartment", "desk", "lamp"),
          ("interiordesign", "homedecor", "apartmenttherapy", "cozyhome", "roommakeover")),
    Topic("pets", "pets", ("puppy", "kitten", "leash", "treats", "vet visit", "grooming", "litter",
                           "fetch", "cat tree", "dog park", "adoption", "chew toy"),
          ("dogsofinstagram", "catsofinstagram", "petlover", "adoptdontshop", "puppylove")),
    Topic("photography", "tech", ("lens", "aperture", "shutter speed", "golden hour", "tripod",
                                  "mirrorless", "composition", "raw files", "iso", "prime lens",
                                  "editing", "film camera"),
          ("photography", "photooftheday", "filmphotography", "streetphotography", "goldenhour")),
    Topic("gadgets", "tech", ("headphones", "smartwatch", "keyboard", "battery life", "charger",
                              "tablet", "earbuds", "e-reader", "noise cancelling", "usb-c", "laptop", "monitor"),
          ("tech", "gadgets", "techreview", "unboxing", "setup", "deskgoals")),
    Topic("personal-finance", "finance", ("budget", "savings", "index fund", "emergency fund",
                                          "credit card", "side hustle", "expenses", "retirement",
                                          "frugal", "spreadsheet", "dividends", "rent"),
          ("personalfinance", "budgeting", "moneytips", "savingmoney", "investing")),
)

@dataclasses.dataclass(frozen=True)
class NoteFormat:
    """A way of writing a note, and the reader community that prefers it.

    Its words are generic (no topic words), so two notes of one format but different
    topics share only template words, and two notes of one topic but different formats
    share the topic's vocabulary: text similarity alone ranks by topic.
    """

    name: str
    titles: tuple[str, ...]
    sentences: tuple[str, ...]


FORMATS: tuple[NoteFormat, ...] = (
    NoteFormat("review",
               ("Honest review: {a} vs {b}", "{A}: worth the hype?", "I tested {a} for a month"),
               ("Not sponsored, I just really like {a} with {b}.", "Pros: the {a}. Cons: the {b}.",
                "I would rate the {a} a solid eight out of ten.")),
    NoteFormat("beginner",
               ("Beginner guide to {a}", "5 tips for better {a}", "{A}: what I wish I knew earlier"),
               ("If you are new, start with {a} and keep it simple.", "Pro tip: pair {a} with {b}.",
                "Step one is {a}, do not worry about {b} yet.")),
    NoteFormat("budget",
               ("How I plan {a} for less", "Cheap {a} that actually works", "{A} without spending much"),
               ("You do not need expensive {a} to start.", "I saved a lot by skipping the {b}.",
                "Second-hand {a} is totally fine.")),
    NoteFormat("diary",
               ("A weekend of {a}", "My {a} and {b} routine", "Day 30 of my {a} journey"),
               ("Today I finally tried {a} and it was worth it.", "Saving this for my next {a} day.",
                "Honestly the {a} made my week.")),
    NoteFormat("question",
               ("Does anyone else struggle with {a}?", "Help: {a} or {b}?", "Is {a} worth it for me?"),
               ("Does anyone else struggle with {a}?", "What would you do about the {b}?",
                "Any advice on {a} is welcome.")),
    NoteFormat("story",
               ("Why {a} changed my {b} game", "Trying {a} with {b} for the first time",
                "The day {a} went wrong"),
               ("It took me three tries to get the {a} right.", "Long story short, the {b} saved me.",
                "I never expected {a} to matter this much.")),
)

# Sentences any note can carry, whatever its format.
COMMON_SENTENCES = (
    "The secret is {a}, not {b}.",
    "I have been into {a} for a while and {b} made a big difference.",
    "My favourite part was the {a}.",
    "Let me know what you think about {a}.",
)

EVENT_TYPE_NAMES = ("impression", "view", "click")

# Behaviour parameters (documented in the module docstring).
ZIPF_S = 1.1
SESSION_OFF_TOPIC = 0.05
INTEREST_WEIGHTS = (0.6, 0.25, 0.15)  # session share of a user's 1st, 2nd, 3rd interest topic
IMPRESSION_OFF_TOPIC = 0.10
# Funnel by whether the note's format is the user's community's (impression -> view -> click).
P_VIEW_OWN_FORMAT = 0.60
P_VIEW_OTHER_FORMAT = 0.04
P_CLICK_OWN_FORMAT = 0.50
P_CLICK_OTHER_FORMAT = 0.10
FEED_COMMUNITY_SHARE = 0.35  # impressions the feed draws from the user's own format within the topic
MEAN_IMPRESSIONS = 12  # per session
BOT_SHARE_OF_EVENTS = 0.03
BACKLOG_DAYS = 30
NOISE_WORD_RATE = 0.08
# Relative session-start weight per UTC hour (quiet nights, busy evenings).
HOURLY_PROFILE = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 5, 5, 6, 5, 5, 5, 6, 7, 8, 9, 10, 9, 6, 4],
                          dtype=np.float64)

DEFAULT_END_DATE = dt.date(2026, 11, 24)


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    notes: int = 2000
    users: int = 3000
    events: int = 200_000
    days: int = 14
    end_date: dt.date = DEFAULT_END_DATE
    seed: int = 42

    @property
    def window_start(self) -> dt.datetime:
        """First instant of the event window (UTC)."""
        return dt.datetime.combine(self.end_date - dt.timedelta(days=self.days - 1), dt.time(),
                                   tzinfo=dt.timezone.utc)

    @property
    def window_end(self) -> dt.datetime:
        """Exclusive end of the event window: midnight after ``end_date``."""
        return dt.datetime.combine(self.end_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)

    def validate(self) -> None:
        if self.notes < len(TOPICS):
            raise ValueError(f"--notes must be at least the number of topics ({len(TOPICS)}), got {self.notes}")
        if self.users < 1 or self.events < 0 or self.days < 1:
            raise ValueError("--users >= 1, --events >= 0 and --days >= 1 are required")


def _micros(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000


# --------------------------------------------------------------------------
# notes


@dataclasses.dataclass
class World:
    """Generated notes plus what the event generator needs to know about them."""

    notes: pa.Table                 # NOTES contract
    topic: np.ndarray               # topic index per note
    fmt: np.ndarray                 # FORMATS index per note
    created_us: np.ndarray          # created_at as epoch micros per note
    popularity: np.ndarray          # Zipf weight per note
    user_interests: np.ndarray      # (users, 3) topic indices, -1 = unused
    user_n_interests: np.ndarray
    user_community: np.ndarray      # FORMATS index each user prefers (their reader community)
    user_activity: np.ndarray       # relative session rate per user
    bots: np.ndarray                # user indices of hyper-active users


def note_ids(n: int) -> list[str]:
    return [f"n{i:07d}" for i in range(n)]


def user_ids(n: int) -> list[str]:
    return [f"u{i:07d}" for i in range(n)]


def _render_texts(rng: np.random.Generator, topic: np.ndarray, fmt: np.ndarray,
                  ) -> tuple[list[str], list[str], list[list[str]]]:
    """Titles, contents and hashtags. All random draws are made up front with
    fixed shapes so the output depends only on the seed. The title and the first
    sentence come from the note's format; later sentences from the format or the
    common pool."""
    n = len(topic)
    n_topics = len(TOPICS)
    n_words = min(len(t.words) for t in TOPICS)
    n_titles = min(len(f.titles) for f in FORMATS)
    n_own = min(len(f.sentences) for f in FORMATS)
    title_tpl = rng.integers(n_titles, size=n)
    n_sent = rng.integers(1, 4, size=n)
    sent_tpl = rng.integers(n_own + len(COMMON_SENTENCES), size=(n, 4))
    sent_tpl[:, 0] %= n_own
    word_idx = rng.integers(n_words, size=(n, 5, 2))
    noise = rng.random(size=(n, 5, 2)) < NOISE_WORD_RATE
    noise_topic = (topic[:, None, None] + rng.integers(1, n_topics, size=(n, 5, 2))) % n_topics
    n_tags = rng.integers(1, 6, size=n)
    tag_perm_keys = rng.random(size=(n, 6))
    titles, contents, hashtags = [], [], []
    for i in range(n):
        t, f = TOPICS[topic[i]], FORMATS[fmt[i]]
        templates = f.sentences[:n_own] + COMMON_SENTENCES

        def word(slot: int, k: int) -> str:
            src = TOPICS[noise_topic[i, slot, k]] if noise[i, slot, k] else t
            return src.words[word_idx[i, slot, k]]

        a, b = word(0, 0), word(0, 1)
        titles.append(f.titles[title_tpl[i]].format(a=a, b=b, A=a.capitalize()))
        sentences = [templates[sent_tpl[i, j]].format(a=word(j + 1, 0), b=word(j + 1, 1))
                     for j in range(n_sent[i])]
        contents.append(" ".join(sentences))
        order = np.argsort(tag_perm_keys[i, :len(t.hashtags)])
        hashtags.append([t.hashtags[j] for j in order[:min(n_tags[i], len(t.hashtags))]])
    return titles, contents, hashtags


def generate_world(cfg: SampleConfig) -> World:
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 1])
    n, n_topics = cfg.notes, len(TOPICS)
    # Topic sizes are mildly uneven (some topics are bigger than others).
    topic_weight = rng.dirichlet(np.full(n_topics, 8.0))
    topic = rng.choice(n_topics, size=n, p=topic_weight)
    topic[:n_topics] = np.arange(n_topics)        # every topic has at least one note
    fmt = rng.integers(len(FORMATS), size=n)

    start_us, end_us = _micros(cfg.window_start), _micros(cfg.window_end)
    backlog_us = start_us - BACKLOG_DAYS * MICROS_PER_DAY
    in_window = rng.random(n) < 0.5
    created = np.where(in_window,
                       rng.integers(start_us, end_us, size=n),
                       rng.integers(backlog_us, start_us, size=n))
    created[:n_topics] = backlog_us + rng.integers(0, MICROS_PER_DAY, size=n_topics)  # a catalogue per topic
    created = (created // 1_000_000) * 1_000_000                                     # whole seconds

    # Zipf popularity over a random rank within the topic.
    rank = np.empty(n, dtype=np.int64)
    keys = rng.random(n)
    order = np.lexsort((keys, topic))
    sorted_topic = topic[order]
    first_of_topic = np.searchsorted(sorted_topic, np.arange(n_topics))
    rank[order] = np.arange(n) - first_of_topic[sorted_topic] + 1
    popularity = 1.0 / rank.astype(np.float64) ** ZIPF_S

    titles, contents, hashtags = _render_texts(rng, topic, fmt)
    categories = np.array([t.category for t in TOPICS], dtype=object)[topic]
    notes = pa.table({
        "note_id": pa.array(note_ids(n), pa.string()),
        "title": pa.array(titles, pa.string()),
        "content": pa.array(contents, pa.string()),
        "hashtags": pa.array(hashtags, pa.list_(pa.string())),
        "category": pa.array(list(categories), pa.string()),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
    })

    u = cfg.users
    n_int = rng.integers(1, 4, size=u)
    interests = np.full((u, 3), -1, dtype=np.int64)
    # Distinct interests per user: first k of a random permutation of topics.
    perm = np.argsort(rng.random((u, n_topics)), axis=1)[:, :3]
    mask = np.arange(3)[None, :] < n_int[:, None]
    interests[mask] = perm[mask]
    community = rng.integers(len(FORMATS), size=u)
    activity = rng.lognormal(0.0, 1.0, size=u)
    n_bots = max(1, u // 500)
    bots = np.sort(rng.choice(u, size=n_bots, replace=False))
    activity[bots] = 0.0                           # bots only produce bot traffic
    return World(notes, topic, fmt, created, popularity, interests, n_int, community, activity, bots)


# --------------------------------------------------------------------------
# events


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


def generate_events(cfg: SampleConfig, world: World) -> pa.Table:
    """The click log as an EVENTS table sorted by event_time (ties by
    generation order). ``user_id``/``note_id``/``event_type`` come out
    dictionary-encoded; the writers cast them to plain strings."""
    rng = np.random.default_rng([cfg.seed, 2])
    start_us, end_us = _micros(cfg.window_start), _micros(cfg.window_end)
    n_topics = len(TOPICS)
    # Expected views and clicks per impression: an impression is of the user's format with
    # probability about FEED_COMMUNITY_SHARE + (1 - FEED_COMMUNITY_SHARE) / len(FORMATS).
    p_own = FEED_COMMUNITY_SHARE + (1.0 - FEED_COMMUNITY_SHARE) / len(FORMATS)
    p_view = p_own * P_VIEW_OWN_FORMAT + (1 - p_own) * P_VIEW_OTHER_FORMAT
    p_click = p_own * P_VIEW_OWN_FORMAT * P_CLICK_OWN_FORMAT + (1 - p_own) * P_VIEW_OTHER_FORMAT * P_CLICK_OTHER_FORMAT
    per_impression = 1.0 + p_view + p_click
    organic_target = cfg.events * (1.0 - BOT_SHARE_OF_EVENTS)
    n_sessions = int(round(organic_target / per_impression / MEAN_IMPRESSIONS))

    # Sessions: who, when, which topic.
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

    # Impressions: a Poisson number per session, a few seconds apart.
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

    # Funnel: impression -> view -> click, each a little later; readers mostly open and
    # click notes written in their community's format.
    own = world.fmt[imp_note] == u_fmt
    viewed = rng.random(n_i) < np.where(own, P_VIEW_OWN_FORMAT, P_VIEW_OTHER_FORMAT)
    clicked = viewed & (rng.random(n_i) < np.where(own, P_CLICK_OWN_FORMAT, P_CLICK_OTHER_FORMAT))
    view_delay = rng.integers(500_000, 5_000_000, size=n_i)
    click_delay = view_delay + rng.integers(1_000_000, 60_000_000, size=n_i)

    # Bots: clicks on uniformly random notes already created, at any time.
    bot_n = int(round(cfg.events * BOT_SHARE_OF_EVENTS))
    bot_user = world.bots[rng.integers(len(world.bots), size=bot_n)]
    bot_time = rng.integers(start_us, end_us, size=bot_n)
    by_created = np.argsort(world.created_us, kind="stable")
    n_created = np.searchsorted(world.created_us[by_created], bot_time, side="right")
    n_created = np.maximum(n_created, 1)
    bot_note = by_created[(rng.random(bot_n) * n_created).astype(np.int64)]

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


# --------------------------------------------------------------------------
# landing form and malformed rows


def iso_utc(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """timestamp[us, UTC] -> '2026-11-20T08:15:02.123000+00:00'."""
    text = pc.strftime(ts, format="%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(text, pa.scalar("+00:00"), "")


def notes_to_landing(notes: pa.Table) -> pa.Table:
    return pa.table({
        "note_id": notes.column("note_id"), "title": notes.column("title"),
        "content": notes.column("content"), "hashtags": notes.column("hashtags"),
        "category": notes.column("category"), "created_at": iso_utc(notes.column("created_at")),
    }, schema=NOTES_LANDING.schema)


def events_to_landing(events: pa.Table) -> pa.Table:
    return pa.table({
        "user_id": events.column("user_id").cast(pa.string()),
        "note_id": events.column("note_id").cast(pa.string()),
        "event_type": events.column("event_type").cast(pa.string()),
        "event_time": iso_utc(events.column("event_time")),
    }, schema=EVENTS_LANDING.schema)


NOTE_DEFECTS = ("null_note_id", "bad_timestamp", "empty_text", "null_category", "duplicate_note_id")
EVENT_DEFECTS = ("null_user_id", "null_note_id", "bad_timestamp", "unknown_event_type",
                 "unknown_note_id", "duplicate_event")
BAD_TIMESTAMPS = ("2026-13-01T00:00:00+00:00", "2026-02-30T10:00:00+00:00", "yesterday", "",
                  "2026-11-20 25:61:00", "2026-11-20T08:15:02")  # the last one lacks an offset
BAD_EVENT_TYPES = ("tap", "CLICK", "purchase", "")


def _defect_counts(n_clean: int, rate: float, kinds: tuple[str, ...]) -> dict[str, int]:
    """``rate`` is the malformed fraction of the clean rows, split evenly over
    the kinds; every kind appears at least once when rate > 0."""
    if rate <= 0 or n_clean == 0:
        return {k: 0 for k in kinds}
    per_kind = max(1, int(round(rate * n_clean / len(kinds))))
    return {k: per_kind for k in kinds}


def _interleave(clean: pa.Table, bad: pa.Table, after: np.ndarray) -> pa.Table:
    """Insert bad row j right after clean row ``after[j]`` (-1 = at the top),
    keeping the relative order of clean rows."""
    keys = np.concatenate([np.arange(clean.num_rows, dtype=np.float64), after.astype(np.float64) + 0.5])
    order = np.argsort(keys, kind="stable")
    return pa.concat_tables([clean, bad]).take(pa.array(order))


def inject_note_defects(notes: pa.Table, rate: float, seed: int) -> tuple[pa.Table, dict[str, int]]:
    rng = np.random.default_rng([seed, 3])
    counts = _defect_counts(notes.num_rows, rate, NOTE_DEFECTS)
    rows: list[dict] = []
    after: list[int] = []
    n = notes.num_rows
    for kind, k in counts.items():
        picks = rng.integers(n, size=k)
        src = notes.take(pa.array(picks, pa.int64())).to_pylist()
        for j, i in enumerate(picks):
            row = dict(src[j])
            if kind == "null_note_id":
                row["note_id"] = None
            elif kind == "bad_timestamp":
                row["note_id"] = f"{row['note_id']}-badts{j}"
                row["created_at"] = BAD_TIMESTAMPS[j % len(BAD_TIMESTAMPS)]
            elif kind == "empty_text":
                row["note_id"] = f"{row['note_id']}-empty{j}"
                row["title"], row["content"] = ("", "  ") if j % 2 else (None, "")
            elif kind == "null_category":
                row["note_id"] = f"{row['note_id']}-nocat{j}"
                row["category"] = None
            elif kind == "duplicate_note_id":
                row["title"] = row["title"] + " (edited copy)"   # same id, different row: later one refused
            rows.append(row)
            after.append(int(i) if kind == "duplicate_note_id" else int(rng.integers(-1, n)))
    if not rows:
        return notes, counts
    bad = pa.Table.from_pylist(rows, schema=NOTES_LANDING.schema)
    return _interleave(notes, bad, np.array(after)), counts


def inject_event_defects(events: pa.Table, rate: float, seed: int,
                         ) -> tuple[pa.Table, dict[str, int]]:
    """Append malformed rows of every kind to a landing events table (all
    strings). Injected rows are extra rows; the clean rows are unchanged."""
    rng = np.random.default_rng([seed, 4])
    counts = _defect_counts(events.num_rows, rate, EVENT_DEFECTS)
    total = sum(counts.values())
    if total == 0:
        return events, counts
    n = events.num_rows
    picks = rng.integers(n, size=total)
    base = events.take(pa.array(picks)).to_pylist()
    rows, after = [], []
    j = 0
    for kind, k in counts.items():
        for m in range(k):
            i, row = int(picks[j]), dict(base[j])
            j += 1
            if kind == "null_user_id":
                row["user_id"] = None if m % 2 == 0 else ""
            elif kind == "null_note_id":
                row["note_id"] = None
            elif kind == "bad_timestamp":
                row["event_time"] = BAD_TIMESTAMPS[m % len(BAD_TIMESTAMPS)]
            elif kind == "unknown_event_type":
                row["event_type"] = BAD_EVENT_TYPES[m % len(BAD_EVENT_TYPES)]
            elif kind == "unknown_note_id":
                row["note_id"] = f"ghost{m:05d}"
            rows.append(row)
            after.append(i if kind == "duplicate_event" else int(rng.integers(-1, n)))
    bad = pa.Table.from_pylist(rows, schema=EVENTS_LANDING.schema)
    return _interleave(events, bad, np.array(after)), counts


# --------------------------------------------------------------------------
# I/O driver


def write_contract(out: Path, world: World, events: pa.Table) -> dict:
    notes_dir = out / "notes"
    write_table(world.notes, notes_dir / "notes.parquet", NOTES)
    mark_success(notes_dir, {"contract": NOTES.name, "rows": world.notes.num_rows})
    days = {}
    for day, part in sorted(split_by_day(events).items()):
        pdir = out / "events" / f"dt={day.isoformat()}"
        write_table(part, pdir / "part-00000.parquet", EVENTS)
        mark_success(pdir, {"contract": EVENTS.name, "rows": part.num_rows,
                            "files": {"part-00000.parquet": part.num_rows}})
        days[day.isoformat()] = part.num_rows
    return days


def write_landing(out: Path, world: World, events: pa.Table, malformed_rate: float, seed: int,
                  ) -> tuple[dict, dict]:
    landing = out / "landing"
    notes_landing, note_defects = inject_note_defects(notes_to_landing(world.notes), malformed_rate, seed)
    write_table(notes_landing, landing / "notes" / "notes.parquet", NOTES_LANDING)
    event_defects = {k: 0 for k in EVENT_DEFECTS}
    days = {}
    for d, (day, part) in enumerate(sorted(split_by_day(events).items())):
        part_landing, counts = inject_event_defects(events_to_landing(part), malformed_rate, seed * 1000 + d)
        for k, v in counts.items():
            event_defects[k] += v
        write_table(part_landing, landing / "events" / f"dt={day.isoformat()}" / "part-00000.parquet",
                    EVENTS_LANDING)
        days[day.isoformat()] = part_landing.num_rows
    return days, {"notes": note_defects, "events": event_defects}


def generate(cfg: SampleConfig, out: str | Path, fmt: str = "contract", malformed_rate: float = 0.0) -> dict:
    """Generate and write; return the stats also written to ``_generator_stats.json``."""
    if fmt not in ("contract", "landing"):
        raise ValueError(f"--format must be 'contract' or 'landing', got {fmt!r}")
    if fmt == "contract" and malformed_rate > 0:
        raise ValueError("--malformed-rate only applies to --format landing (contract data is valid by definition)")
    out = Path(out)
    t0 = time.perf_counter()
    world = generate_world(cfg)
    events = generate_events(cfg, world)
    t_gen = time.perf_counter() - t0
    # Replace earlier output of the same format so reruns are idempotent.
    for sub in (["notes", "events"] if fmt == "contract" else ["landing"]):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    if fmt == "contract":
        days, injected = write_contract(out, world, events), None
    else:
        days, injected = write_landing(out, world, events, malformed_rate, cfg.seed)
    counts = pc.value_counts(events.column("event_type").cast(pa.string())).to_pylist()
    stats = {
        "config": {**dataclasses.asdict(cfg), "end_date": cfg.end_date.isoformat()},
        "format": fmt,
        "malformed_rate": malformed_rate,
        "notes": world.notes.num_rows,
        "users": cfg.users,
        "bots": [f"u{b:07d}" for b in world.bots],
        "events": events.num_rows,
        "events_by_type": {c["values"]: c["counts"] for c in counts},
        "rows_per_partition": days,
        "window": [cfg.window_start.isoformat(), cfg.window_end.isoformat()],
        "injected": injected,
        "seconds_generate": round(t_gen, 3),
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "_generator_stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.sources.sample", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output root")
    p.add_argument("--notes", type=int, default=SampleConfig.notes)
    p.add_argument("--users", type=int, default=SampleConfig.users)
    p.add_argument("--events", type=int, default=SampleConfig.events, help="total events (approximate target)")
    p.add_argument("--days", type=int, default=SampleConfig.days)
    p.add_argument("--end-date", type=dt.date.fromisoformat, default=DEFAULT_END_DATE,
                   help="last day of the event window (UTC), default %(default)s")
    p.add_argument("--seed", type=int, default=SampleConfig.seed)
    p.add_argument("--format", choices=("contract", "landing"), default="contract")
    p.add_argument("--malformed-rate", type=float, default=0.0,
                   help="landing only: malformed rows as a fraction of clean rows, split over all defect kinds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = SampleConfig(notes=a.notes, users=a.users, events=a.events, days=a.days, end_date=a.end_date, seed=a.seed)
    try:
        stats = generate(cfg, a.out, a.format, a.malformed_rate)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
