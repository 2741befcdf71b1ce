"""Training configuration: a dataclass read from JSON, with ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass
class TrainConfig:
    # data
    pairs: str = ""                    # a PAIRS partition dir <pairs_root>/dt=YYYY-MM-DD (needs _SUCCESS)
    notes: str = ""                    # NOTES file or its root (<root>/notes/notes.parquet)
    max_missing_fraction: float = 0.05 # refuse data when more pairs than this reference unknown notes
    output_dir: str = ""
    # model (NoteLLM defaults, paper Sec. 4)
    backbone: str = "smollm2"          # 'smollm2' or a HF causal-LM directory
    dim: int = 128
    template_version: str = "v1-paper"
    max_title_tokens: int = 20
    max_content_tokens: int = 80
    tau_init: float = 3.0
    alpha: float = 0.01
    r: float = 0.4
    train_top_layers: int = 0          # 0 = every weight (the paper); N = only the top N blocks + norm + projection
    # optimisation
    batch_pairs: int = 16              # B pairs = 2B notes per global batch
    lr: float = 3e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_steps: int | None = None       # when set, wins over epochs
    epochs: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    # runtime
    deepspeed_config: str = "zero2"    # 'zero2', 'zero3' or a JSON path
    bf16: str | bool = "auto"          # auto: bf16 on CUDA, fp32 on CPU
    cpu_autocast_bf16: bool | str = False  # bf16 autocast on CPU; "auto" = where the CPU has native bf16
    save_every: int = 100              # DeepSpeed checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2
    log_every: int = 10
    progress_bar: str | bool = "auto"  # tqdm when stderr is a terminal

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> "TrainConfig":
        data: dict[str, Any] = {}
        if path:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict):
                raise ValueError(f"{path}: a training config is a JSON object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{path}: unknown config key(s) {unknown}; known: {sorted(known)}")
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"--set expects key=value, got {item!r}")
            key, raw = item.split("=", 1)
            if key not in known:
                raise ValueError(f"--set {key}: unknown config key; known: {sorted(known)}")
            data[key] = _parse_value(raw)
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        problems = []
        if not self.pairs:
            problems.append("pairs is required")
        if not self.notes:
            problems.append("notes is required")
        if not self.output_dir:
            problems.append("output_dir is required")
        if not 0.0 <= self.r <= 1.0:
            problems.append(f"r={self.r} must be in [0, 1]")
        if self.alpha < 0:
            problems.append(f"alpha={self.alpha} must be >= 0")
        if self.cpu_autocast_bf16 not in (True, False, "auto"):
            problems.append(f"cpu_autocast_bf16={self.cpu_autocast_bf16!r} must be true, false or 'auto'")
        if self.train_top_layers < 0:
            problems.append("train_top_layers must be >= 0 (0 = train every layer)")
        if self.batch_pairs < 1:
            problems.append("batch_pairs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("max_steps must be >= 1")
        if self.save_every < 1 or self.log_every < 1:
            problems.append("save_every and log_every must be >= 1")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _parse_value(raw: str):
    """JSON when it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def deepspeed_config_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.json" if name in ("zero2", "zero3") else Path(name)
    if not path.exists():
        raise FileNotFoundError(f"DeepSpeed config {name!r}: {path} does not exist")
    return path


def resolve_deepspeed_config(ds: dict, cfg: TrainConfig, world_size: int, use_bf16: bool) -> dict:
    """Replace the "auto" values (Hugging Face Trainer convention) from the training config.

    We call ``deepspeed.initialize`` ourselves, and DeepSpeed itself does not
    understand "auto", so every "auto" must be resolved here:
    micro batch = 2 * batch_pairs / world notes per rank, gradient accumulation
    1 (GCL needs the whole batch in one step), clipping, bf16, and the ZeRO-3
    bucket sizes (from the model hidden size, as the HF integration does).
    """
    ds = json.loads(json.dumps(ds))
    notes_per_rank = 2 * cfg.batch_pairs // world_size
    resolved = {
        "train_micro_batch_size_per_gpu": notes_per_rank,
        "train_batch_size": notes_per_rank * world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
    }
    for key, value in resolved.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    if ds.get("gradient_accumulation_steps") != 1:
        raise ValueError("gradient_accumulation_steps must be 1: the contrastive loss needs the whole batch at once")
    ds.setdefault("bf16", {})
    if ds["bf16"].get("enabled", "auto") == "auto":
        ds["bf16"]["enabled"] = bool(use_bf16)
    ds["zero_allow_untested_optimizer"] = True  # we pass torch AdamW (no cpu_adam build)
    return ds


def resolve_zero3_auto(ds: dict, hidden_size: int) -> dict:
    zero = ds.get("zero_optimization", {})
    auto = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in auto.items():
        if zero.get(key) == "auto":
            zero[key] = value
    return ds
