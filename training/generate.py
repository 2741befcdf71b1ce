"""Generate categories or hashtags with a trained NoteLLM model (the CSFT side).

Usage::

    python -m training.generate --model RUN/model --notes NOTES --task category|hashtag \\
        [--constrained] [--limit 20] [--note-ids a,b] [--j 3]

Prints one JSON line per note: note_id, task, generated, truth. Free mode
decodes greedily; ``--constrained`` (category only) returns the known
category with the highest likelihood of the complete answer (options: the
categories the model was trained on, from its side-car, else those of the
notes table). The last line is a summary (category accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys

from training.data import load_notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--notes", required=True)
    p.add_argument("--task", choices=("category", "hashtag"), default="category")
    p.add_argument("--constrained", action="store_true", help="only emit a known category")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--note-ids", default=None, help="comma-separated ids (default: the first --limit notes)")
    p.add_argument("--j", type=int, default=3, help="number of hashtags to generate")
    p.add_argument("--max-new-tokens", type=int, default=24)
    args = p.parse_args(argv)
    if args.constrained and args.task != "category":
        p.error("--constrained applies to --task category (the closed set of categories)")
    from notellm.encoder import NoteEncoder

    model = NoteEncoder.load(args.model)
    wanted = set(args.note_ids.split(",")) if args.note_ids else None
    notes = load_notes(args.notes, wanted)
    if wanted and wanted - set(notes):
        print(f"error: note ids not in {args.notes}: {sorted(wanted - set(notes))[:10]}", file=sys.stderr)
        return 1
    chosen = list(notes.values())[:args.limit] if not wanted else [notes[n] for n in args.note_ids.split(",")]
    allowed = None
    if args.constrained:
        allowed = model.config.extra.get("categories") or sorted({n["category"] for n in load_notes(args.notes).values()})
    correct = 0
    for note in chosen:
        out = model.generate(note, task=args.task, j=args.j, max_new_tokens=args.max_new_tokens,
                             allowed_outputs=allowed)
        truth = note["category"] if args.task == "category" else list(note["hashtags"])
        correct += int(args.task == "category" and out.strip() == truth)
        print(json.dumps({"note_id": note["note_id"], "task": args.task, "generated": out, "truth": truth},
                         ensure_ascii=False))
    summary = {"notes": len(chosen), "task": args.task, "constrained": args.constrained}
    if args.task == "category":
        summary["accuracy"] = correct / len(chosen) if chosen else None
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
