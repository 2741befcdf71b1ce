"""Note Compression Prompt templates (NoteLLM, Zhang et al., WWW 2024, Sec. 3.2).

The paper's unified prompt for both tasks is::

    [BOS]<Instruction> <Input Note> The compression word is:"[EMB]". <Output Guidance> <Output>[EOS]

* category task: instruction "Extract the note information in json format,
  compress it into one word for recommendation, and generate the category of
  the note."; input note ``{'title': ..., 'topic': <hashtags>, 'content': ...}``;
  guidance "The category is:"; output the category.
* hashtag task: instruction "... and generate <j> topics of the note.";
  input note ``{'title': ..., 'content': ...}`` (hashtags removed); guidance
  "The <j> topics are:"; output j hashtags sampled from the note's hashtags.

The note embedding is read at the position *just before* ``[EMB]``, so
everything up to and including ``The compression word is:"`` is the part that
determines the embedding (:attr:`EncodedPrompt.emb_index`). Prompts are built
segment by segment as token ids (prefix, ``[EMB]``, suffix, output), never by
tokenising a concatenated string, so the prefix ids are identical whether or
not the output is appended: training and inference see the same state.

Versions:

* ``v1-paper``: the paper's template, word for word.
* ``v2-short``: the same without the instruction sentence (as in the authors'
  released code); the note JSON starts the prompt. About 30 tokens shorter.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
from typing import Mapping, Sequence

EMB_TOKEN = "[EMB]"
DEFAULT_TEMPLATE_VERSION = "v1-paper"
TEMPLATE_VERSIONS = ("v1-paper", "v2-short")
DEFAULT_TITLE_TOKENS = 20
DEFAULT_CONTENT_TOKENS = 80
TRUNCATION_MARGIN_TOKENS = 16

_INSTRUCTION_HEAD = "Extract the note information in json format, compress it into one word for recommendation, and "
CATEGORY_INSTRUCTION = _INSTRUCTION_HEAD + "generate the category of the note."
CATEGORY_GUIDANCE = "The category is:"


def hashtag_instruction(j: int) -> str:
    return _INSTRUCTION_HEAD + f"generate {j} topics of the note."


def hashtag_guidance(j: int) -> str:
    return f"The {j} topics are:"


COMPRESSION_LEAD = 'The compression word is:"'
COMPRESSION_TAIL = '".'  # follows [EMB]


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    template_version: str = DEFAULT_TEMPLATE_VERSION
    max_title_tokens: int = DEFAULT_TITLE_TOKENS
    max_content_tokens: int = DEFAULT_CONTENT_TOKENS

    def __post_init__(self):
        if self.template_version not in TEMPLATE_VERSIONS:
            raise ValueError(f"unknown template_version {self.template_version!r}; known: {TEMPLATE_VERSIONS}")


def note_json(title: str, content: str, hashtags: Sequence[str] | None) -> str:
    """The <Input Note> part. Python-dict style quoting as printed in the paper."""
    if hashtags is None:
        return "{" + f"'title': {title!r}, 'content': {content!r}" + "}"
    topic = ", ".join(hashtags)
    return "{" + f"'title': {title!r}, 'topic': {topic!r}, 'content': {content!r}" + "}"


def prefix_text(task: str, title: str, content: str, hashtags: Sequence[str], j: int,
                template_version: str) -> str:
    """Everything before [EMB]: ``<Instruction> <Input Note> The compression word is:"``."""
    if task == "category":
        instruction, note = CATEGORY_INSTRUCTION, note_json(title, content, hashtags)
    elif task == "hashtag":
        instruction, note = hashtag_instruction(j), note_json(title, content, None)
    else:
        raise ValueError(f"unknown task {task!r} (expected 'category' or 'hashtag')")
    if template_version == "v2-short":
        return f"{note} {COMPRESSION_LEAD}"
    return f"{instruction} {note} {COMPRESSION_LEAD}"


def suffix_text(task: str, j: int) -> str:
    """Everything after [EMB] up to the output: ``". <Output Guidance>``."""
    guidance = CATEGORY_GUIDANCE if task == "category" else hashtag_guidance(j)
    return f"{COMPRESSION_TAIL} {guidance}"


def output_text(task: str, category: str, hashtags: Sequence[str]) -> str:
    return f" {category}" if task == "category" else " " + ", ".join(hashtags)


@dataclasses.dataclass
class EncodedPrompt:
    input_ids: list[int]
    labels: list[int]  # -100 everywhere except the output tokens (and EOS)
    emb_index: int     # position of [EMB]; the embedding is read at emb_index - 1


def sample_hashtags(hashtags: Sequence[str], rng: random.Random, max_j: int = 5) -> list[str]:
    """Pick j of the note's hashtags (1 <= j <= min(max_j, len)), order kept."""
    if not hashtags:
        return []
    j = rng.randint(1, min(max_j, len(hashtags)))
    picked = sorted(rng.sample(range(len(hashtags)), j))
    return [hashtags[i] for i in picked]


class PromptBuilder:
    """Turns notes into token ids with a Hugging Face tokenizer.

    ``tokenizer`` must already contain :data:`EMB_TOKEN` as a special token.
    """

    def __init__(self, tokenizer, config: PromptConfig = PromptConfig()):
        self.tokenizer = tokenizer
        self.config = config
        emb_id = tokenizer.convert_tokens_to_ids(EMB_TOKEN)
        if emb_id is None or emb_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {EMB_TOKEN} token; build the encoder with NoteEncoder.build first")
        self.emb_id = emb_id
        # Prepend BOS only where the tokenizer defines one that differs from EOS
        # (GPT-2 style tokenizers reuse EOS; prepending it would be noise).
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.bos = [bos] if bos is not None and bos != eos else []
        self.eos = [eos] if eos is not None else []

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @functools.cached_property
    def _max_token_chars(self) -> int:
        """Most characters one token can stand for (its vocabulary string; byte-level
        vocabularies spell each byte as one character, so this bounds the decoded text)."""
        return max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1

    def _truncate(self, text: str, max_tokens: int) -> str:
        # Cut before tokenising: a 5 MB content must not be tokenised whole to keep 80 tokens.
        # The first max_tokens tokens span at most max_tokens * _max_token_chars characters; the
        # margin of TRUNCATION_MARGIN_TOKENS more keeps the pre-tokenizer chunk at the cut from
        # changing them (tests/notellm/test_prompts.py compares with tokenising the whole text).
        limit = (max_tokens + TRUNCATION_MARGIN_TOKENS) * self._max_token_chars
        if len(text) > limit:
            text = text[:limit]
        ids = self._ids(text)
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[:max_tokens])

    def truncated_fields(self, note: Mapping) -> tuple[str, str]:
        return (self._truncate(note["title"] or "", self.config.max_title_tokens),
                self._truncate(note["content"] or "", self.config.max_content_tokens))

    def encode(self, note: Mapping, task: str = "category", hashtags_out: Sequence[str] | None = None,
               with_output: bool = True) -> EncodedPrompt:
        """Token ids for one note. ``with_output=False`` gives the inference
        prompt, which ends right before ``[EMB]`` (its embedding position is the
        same as in the training sequence)."""
        title, content = self.truncated_fields(note)
        hashtags = list(note.get("hashtags") or [])
        chosen = list(hashtags_out) if hashtags_out is not None else hashtags
        j = max(1, len(chosen))
        prefix = self.bos + self._ids(prefix_text(task, title, content, hashtags, j, self.config.template_version))
        emb_index = len(prefix)
        if not with_output:
            # Inference: the prompt ends right before [EMB]; its last token is
            # the embedding position, exactly as in the training sequence.
            return EncodedPrompt(prefix, [-100] * len(prefix), emb_index)
        suffix = self._ids(suffix_text(task, j))
        out = self._ids(output_text(task, note.get("category", ""), chosen)) + self.eos
        ids = prefix + [self.emb_id] + suffix + out
        labels = [-100] * (len(prefix) + 1 + len(suffix)) + out
        return EncodedPrompt(ids, labels, emb_index)

    def generation_prompt(self, note: Mapping, task: str = "category", j: int = 3) -> list[int]:
        """Ids up to and including the output guidance, for generating the output."""
        title, content = self.truncated_fields(note)
        hashtags = list(note.get("hashtags") or [])
        prefix = self.bos + self._ids(prefix_text(task, title, content, hashtags, j, self.config.template_version))
        return prefix + [self.emb_id] + self._ids(suffix_text(task, j))


def note_fingerprint(note: Mapping, config: PromptConfig = PromptConfig()) -> str:
    """sha256 over everything the inference prompt depends on; equal
    fingerprints (under the same model) give equal embeddings."""
    payload = json.dumps(
        [config.template_version, config.max_title_tokens, config.max_content_tokens,
         note.get("title") or "", note.get("content") or "", list(note.get("hashtags") or [])],
        ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
