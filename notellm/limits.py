"""Input caps: one huge note must not exhaust memory in the nightly run.

Ingest and the public-data adapters quarantine a note over any cap with the
reason ``too_long`` (its raw text in the quarantine is capped too), so every
later stage handles bounded rows. The text caps are derived from the paper's
prompt budgets (20 title tokens, 80 content tokens, notellm.prompts): a token
of the default tokenizer decodes to at most a few dozen characters, so
``CHARS_PER_TOKEN_CAP`` characters per budgeted token keep every note whose
prompt could differ and refuse only pathological rows.
"""

from __future__ import annotations

from notellm.prompts import DEFAULT_CONTENT_TOKENS, DEFAULT_TITLE_TOKENS

#: Characters allowed per budgeted prompt token (generous: real titles are ~3-6 per token).
CHARS_PER_TOKEN_CAP = 100
MAX_TITLE_CHARS = DEFAULT_TITLE_TOKENS * CHARS_PER_TOKEN_CAP          # 2,000
MAX_CONTENT_CHARS = DEFAULT_CONTENT_TOKENS * CHARS_PER_TOKEN_CAP * 10  # 80,000: content is kept for reports
MAX_HASHTAGS = 64
MAX_HASHTAG_CHARS = 200
MAX_ID_CHARS = 256
#: The raw row kept in a quarantine file is cut to this many characters (marked as cut).
MAX_QUARANTINE_RAW_CHARS = 4_096


def cap_raw(raw: str | None, limit: int = MAX_QUARANTINE_RAW_CHARS) -> str | None:
    """``raw`` cut to ``limit`` characters, with a marker saying how much was cut."""
    if raw is None or len(raw) <= limit:
        return raw
    return raw[:limit] + f"...[cut: {len(raw) - limit} more characters]"
