"""The retrieval systems compared in the quality report.

Each system turns the evaluation pool into a pool x pool score matrix
``S[i, j]`` (higher = more related); ranking, Recall@K and the cases are then
computed the same way for every system (:mod:`evaluation.scoring`).

* ``bm25``: Okapi BM25 (bm25s, Lucene variant, k1 = 1.5, b = 0.75, English stop
  words) over title + content, each pool note as a query against the pool.
* ``minilm``: all-MiniLM-L6-v2 zero-shot (the shipped wheel), mean pooling,
  cosine similarity: the SentenceBERT baseline.
* ``minilm_ft``: the same model fine-tuned on the training pairs with
  sentence-transformers' MultipleNegativesRankingLoss (in-batch negatives,
  scale 20), the same pairs and number of steps as NoteLLM: the paper's online
  baseline.
* ``smollm_prompteol``: SmolLM2 zero-shot with a PromptEOL one-word prompt
  (Jiang et al. 2023), the last token's final hidden state, cosine similarity.
* NoteLLM variants are trained by ``python -m training.train`` (a subprocess,
  exactly as the retraining DAG runs it) and embedded with the shared
  :class:`notellm.encoder.NoteEncoder` (see :mod:`evaluation.compare`).

Text given to the dense baselines: title, hashtags and content, the same
fields NoteLLM's prompt holds; BM25 uses title + content (lexical baseline).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from notellm.batching import first_batches
from notellm.schedule import linear_warmup_decay, warmup_steps


def note_text(note: Mapping, with_hashtags: bool = True) -> str:
    tags = " ".join(f"#{t}" for t in note.get("hashtags") or []) if with_hashtags else ""
    return "\n".join(x for x in (note["title"], tags, note["content"]) if x)


def cosine_scores(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v @ v.T


# ------------------------------------------------------------------ BM25
def bm25_scores(pool_notes: Sequence[Mapping]) -> np.ndarray:
    """Pool x pool BM25 scores; row i = note i's title + content as the query."""
    import bm25s
    texts = [note_text(n, with_hashtags=False) for n in pool_notes]
    corpus_tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=False)
    # a note made only of stop words has no query terms: it scores 0 against everything
    return np.stack([np.asarray(retriever.get_scores(q), dtype=np.float32) if q else np.zeros(len(texts), np.float32)
                     for q in query_tokens])


# ------------------------------------------------------------------ MiniLM
def load_minilm(model_dir: str | Path | None = None, device: str = "cpu"):
    """A sentence-transformers model on ``device`` in fp32 (the GPU bundle's fp16 copy too), whose
    ``preprocess`` puts its tensors on that device (:func:`minilm_finetune` calls it directly)."""
    from sentence_transformers import SentenceTransformer

    from notellm.backbone import minilm_dir
    model = SentenceTransformer(str(model_dir or minilm_dir()), device=device).float()
    plain = model.preprocess

    def preprocess(*args, **kwargs):
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in plain(*args, **kwargs).items()}

    model.preprocess = preprocess
    return model


def minilm_embed(model, pool_notes: Sequence[Mapping], batch_size: int = 64) -> np.ndarray:
    return model.encode([note_text(n) for n in pool_notes], batch_size=batch_size, convert_to_numpy=True,
                        normalize_embeddings=True, show_progress_bar=False)


def minilm_finetune(train_pairs: Sequence[tuple[str, str]], notes: Mapping[str, Mapping], out_dir: Path,
                    steps: int, batch_pairs: int, lr: float = 2e-5, warmup_fraction: float = 0.1,
                    seed: int = 0, device: str = "cpu") -> dict:
    """Fine-tune MiniLM with in-batch negatives (MultipleNegativesRankingLoss).

    Symmetric over the 2B notes of a batch, like NoteLLM's contrastive loss:
    each note's partner against every other note of the batch (all four
    directions of MultipleNegativesRankingLoss, one joint softmax), with
    similarity 20 * cos (scale 20, the library default). AdamW, linear warm-up over
    ``warmup_fraction`` of the steps then linear decay (the sentence-transformers
    recipe, :mod:`notellm.schedule`). Batches: the NoteLLM trainer's unique-note
    plan (:func:`notellm.batching.first_batches`), so both see the same batches of
    the same pairs. Returns the cost figures and the loss curve; the model is saved.
    """
    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    torch.manual_seed(seed)
    model = load_minilm(device=device)
    model.train()
    loss_fn = MultipleNegativesRankingLoss(
        model, directions=("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), partition_mode="joint")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay(warmup_steps(steps, warmup_fraction), steps))
    curve = {"step": [], "l_cl": [], "l_gen": []}
    t0 = time.perf_counter()
    for step, batch in enumerate(first_batches(train_pairs, batch_pairs, steps, seed), start=1):
        feats = [model.preprocess([note_text(notes[p[k]]) for p in batch]) for k in (0, 1)]
        loss = loss_fn(feats, labels=None)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        curve["step"].append(step)
        curve["l_cl"].append(float(loss.detach()))
        curve["l_gen"].append(None)
    wall = time.perf_counter() - t0
    model.eval()
    model.save(str(out_dir))
    # samples = notes, as in training.train (a pair is two samples)
    return {"train_wall_s": wall, "train_samples_per_s": 2 * steps * batch_pairs / wall, "loss_curve": curve}


# ------------------------------------------------------------------ SmolLM2 PromptEOL
PROMPTEOL_TEMPLATE = 'This note : "{text}" means in one word:"'


def prompteol_embed(backbone_dir: str | Path, pool_notes: Sequence[Mapping], batch_size: int = 16,
                    max_title_tokens: int = 20, max_content_tokens: int = 80) -> tuple[np.ndarray, float]:
    """PromptEOL (Jiang et al. 2023): the final hidden state of the prompt's last token.
    Returns the vectors and the embedding wall time (model loading excluded, as for the others).

    Title and content are truncated to the same token budgets as NoteLLM's
    prompt; batches are left-padded so the last position is the prompt's end.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(backbone_dir))
    model = AutoModel.from_pretrained(str(backbone_dir), dtype=torch.float32).eval()

    def cut(text: str, n: int) -> str:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return tok.decode(ids[:n]) if len(ids) > n else text

    prompts = []
    for note in pool_notes:
        tags = " ".join(f"#{t}" for t in note.get("hashtags") or [])
        body = " ".join(x for x in (cut(note["title"], max_title_tokens), tags,
                                    cut(note["content"], max_content_tokens)) if x)
        prompts.append(PROMPTEOL_TEMPLATE.format(text=body))
    t0 = time.perf_counter()
    encoded = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    out = np.zeros((len(encoded), model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):                      # left padding
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            # explicit positions: left padding must not shift the prompt's positions
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           use_cache=False).last_hidden_state
            out[idx] = hidden[:, -1].float().numpy()
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ random within category (a floor)
def random_within_category_recall(pool_categories: Sequence[str], query_rows: Sequence[int],
                                  target_rows: Sequence[int], ks: Sequence[int]) -> dict[int, float]:
    """Expected Recall@K of ranking the query's own category first, in random
    order, then every other note in random order (the query excluded).

    With s = same-category candidates and o = the others: a same-category
    target is in the top K with probability min(K, s) / s; another target
    with probability clip(K - s, 0, o) / o. Exact expectation, no sampling.
    """
    cats = np.asarray(pool_categories, dtype=object)
    n = len(cats)
    out = {}
    for k in ks:
        kc = max(0, min(int(k), n - 1))
        hits = 0.0
        for q, t in zip(query_rows, target_rows):
            s = int((cats == cats[q]).sum()) - 1
            o = (n - 1) - s
            if cats[t] == cats[q]:
                hits += min(kc, s) / s if s else 0.0
            else:
                hits += min(max(kc - s, 0), o) / o if o else 0.0
        out[int(k)] = hits / len(query_rows) if len(query_rows) else math.nan
    return out
