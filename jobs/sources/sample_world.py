"""The sample's world: topics, note formats, notes and users.

Part of the deterministic sample generator (``jobs.sources.sample``; the
events are made by ``jobs.sources.sample_events``). Only the note texts are
formatted per note; everything else is vectorised numpy.

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

Same seed and settings give byte-identical notes (all draws come from
``numpy.random.default_rng([seed, 1])`` in a fixed order).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa

from jobs.config import SAMPLE_END_DATE, SampleConfig
from jobs.sources import MICROS_PER_DAY

DEFAULT_END_DATE = SAMPLE_END_DATE

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

        def word(slot: int, k: int, i: int = i, t=t) -> str:  # this note's i and topic, bound now
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

