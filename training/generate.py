"""Generate categories or hashtags with a trained NoteLLM model (the CSFT side).

Usage::

    python -m training.generate --model RUN/model --notes NOTES --task category|hashtag \\
        [--constrained] [--limit 20] [--note-ids a,b] [--j 3]

The result line holds ``generations`` (note_id, task, generated, truth per
note) and ``summary`` (category accuracy). Free mode decodes greedily;
``--constrained`` (category only) returns the known category with the highest
likelihood of the complete answer (options: the categories the model was
trained on, from its side-car, else those of the notes table).
"""

from __future__ import annotations

import sys

from notellm import cli
from training.config import GenerateConfig
from training.data import load_notes


def _run(cfg: GenerateConfig, timer: cli.Timer) -> dict:
    from notellm.encoder import NoteEncoder

    with timer.phase("load"):
        model = NoteEncoder.load(cfg.model)
        wanted = set(cfg.note_ids) if cfg.note_ids else None
        notes = load_notes(cfg.notes, wanted)
    if wanted and wanted - set(notes):
        raise cli.BadInput(f"{cfg.notes}: note ids not found: {sorted(wanted - set(notes))[:10]}")
    chosen = [notes[n] for n in cfg.note_ids] if wanted else list(notes.values())[:cfg.limit]
    allowed = None
    if cfg.constrained:
        allowed = (model.config.extra.get("categories")
                   or sorted({n["category"] for n in load_notes(cfg.notes).values()}))
    rows, correct = [], 0
    with timer.phase("generate"):
        for note in chosen:
            out = model.generate(note, task=cfg.task, j=cfg.j, max_new_tokens=cfg.max_new_tokens,
                                 allowed_outputs=allowed)
            truth = note["category"] if cfg.task == "category" else list(note["hashtags"])
            correct += int(cfg.task == "category" and out.strip() == truth)
            rows.append({"note_id": note["note_id"], "task": cfg.task, "generated": out, "truth": truth})
    summary = {"notes": len(chosen), "task": cfg.task, "constrained": cfg.constrained}
    if cfg.task == "category":
        summary["accuracy"] = correct / len(chosen) if chosen else None
    return {"generations": rows, "summary": summary}


def main(argv=None) -> int:
    return cli.main(_run, GenerateConfig, argv, prog="python -m training.generate")


if __name__ == "__main__":
    sys.exit(main())
