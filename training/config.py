"""Configuration of the training commands: one dataclass per command (the help
of every setting lives here), read from flags, JSON/YAML and ``--set key=value``
by :mod:`notellm.config`: TrainConfig (training.train), PrepareConfig (training.prepare), EvaluateConfig
(training.evaluate), RegisterConfig (training.register), GenerateConfig
(training.generate).

Importable without torch: the retraining DAG derives its Param defaults from it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from notellm import config as configs
from notellm.config import option
from notellm.precision import PRECISIONS
from notellm.prompts import DEFAULT_CONTENT_TOKENS, DEFAULT_TEMPLATE_VERSION, DEFAULT_TITLE_TOKENS, TEMPLATE_VERSIONS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# The paper's GCL / CSFT defaults (Sec. 4), also the defaults of training/loss.py and training/model.py.
DEFAULT_TAU_INIT = 3.0
DEFAULT_ALPHA = 0.01
# Shared by TrainConfig and PrepareConfig: a prepared folder is made for the run's batches.
DEFAULT_BATCH_PAIRS = 16
DEFAULT_MAX_MISSING_FRACTION = 0.05


@dataclasses.dataclass
class TrainConfig:
    """Fine-tune NoteLLM (GCL + CSFT) with DeepSpeed; defaults are the paper's (Sec. 4)."""

    # data
    pairs: str = option(help="a PAIRS partition dir <pairs_root>/dt=YYYY-MM-DD (needs _SUCCESS)")
    notes: str = option(help="NOTES file or its root (<root>/notes/notes.parquet)")
    output_dir: str = option(help="run directory: model/, checkpoints/, train_log.jsonl, metrics.json")
    max_missing_fraction: float = option(DEFAULT_MAX_MISSING_FRACTION,
                                         help="refuse the data when more pairs than this reference unknown notes")
    # model
    backbone: str = option("smollm2", help="'smollm2' (the shipped GGUF) or a Hugging Face causal-LM directory")
    dim: int = option(128, help="embedding dimension of the projection after the [EMB] state")
    template_version: str = option(DEFAULT_TEMPLATE_VERSION, help="Note Compression Prompt template",
                                   choices=TEMPLATE_VERSIONS)
    max_title_tokens: int = option(DEFAULT_TITLE_TOKENS, help="title budget in tokens inside the prompt")
    max_content_tokens: int = option(DEFAULT_CONTENT_TOKENS, help="content budget in tokens inside the prompt")
    tau_init: float = option(DEFAULT_TAU_INIT, help="initial temperature of the contrastive loss (learned)")
    alpha: float = option(DEFAULT_ALPHA, help="weight of the generation loss: L = (L_cl + alpha * L_gen) / (1 + alpha)")
    r: float = option(0.4, help="share of training examples that use the category task (the rest: hashtags)")
    train_top_layers: int = option(0, help="0 = every weight (the paper); N = only the top N blocks, final norm "
                                           "and projection")
    # memory levers: none changes the loss or its gradient, only what is kept in memory
    gradient_checkpointing: bool = option(False, help="recompute each block's activations in the backward pass "
                                                      "(activation memory per block ~ one hidden state)")
    chunk_notes: int = option(0, help="GradCache: each rank embeds its notes in chunks of this many, first without "
                                      "a graph, then re-runs each chunk with the cached loss gradient; 0 = the whole "
                                      "local batch in one pass. The global in-batch batch no longer scales activation "
                                      "memory")
    lora_r: int = option(0, help="LoRA rank of adapters on the attention/MLP projections (RepLLaMA style; the [EMB] "
                                 "row, final norm and projection train in full); 0 = train every weight (the paper)")
    lora_alpha: float = option(64.0, help="LoRA scaling numerator: the update is (lora_alpha / lora_r) * B A")
    lora_dropout: float = option(0.0, help="dropout on the LoRA input")
    lora_target_modules: list[str] = option(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        help="module names (suffixes) that get adapters (comma list)")
    # optimisation
    batch_pairs: int = option(DEFAULT_BATCH_PAIRS,
                              help="B related pairs = 2B notes per global batch, over all ranks together (each of W "
                                   "ranks holds B / W pairs; the negatives span all 2B notes)")
    lr: float = option(3e-5, help="peak learning rate (AdamW)")
    weight_decay: float = option(0.0, help="AdamW weight decay (not applied to norms, biases, tau)")
    warmup_steps: int = option(0, help="linear warm-up steps, then linear decay to 0")
    max_steps: int | None = option(None, help="stop after this many steps; wins over epochs")
    epochs: float = option(1.0, help="passes over the pairs (fractions allowed)")
    grad_clip: float = option(1.0, help="gradient clipping norm")
    seed: int = option(0, help="seed of initialisation, batches and task sampling")
    # runtime
    deepspeed_config: str = option("zero2", help="'zero2', 'zero3' or the path of a DeepSpeed JSON config")
    bf16: str | bool = option("auto", help="bf16 weights: auto = on CUDA only; true / false")
    cpu_autocast_bf16: bool | str = option(False, help="bf16 autocast on CPU: true, false or auto (where the CPU "
                                                       "has native bf16)")
    save_every: int = option(100, help="DeepSpeed checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(2, help="checkpoints kept (older ones are pruned)")
    log_every: int = option(10, help="log line and in-batch accuracy every N steps")
    progress_bar: str | bool = option("auto", help="tqdm bar: auto = when stderr is a terminal; true / false")
    prepared_dir: str | None = option(None, help="a folder written by python -m training.prepare for these pairs, "
                                                 "notes, batch_pairs and seed (read only; refused when it differs); "
                                                 "none = rank 0 prepares <output_dir>/prepared (reused when equal)")
    dataloader_workers: int = option(2, help="DataLoader worker processes per rank that read and tokenise the "
                                             "next batches (0 = in the training process)")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> "TrainConfig":
        """The config of a JSON/YAML file plus ``key=value`` overrides (ConfigError names the key)."""
        data = configs.read_file(path) if path else {}
        for item in overrides or []:
            if "=" not in item:
                raise configs.ConfigError(f"--set expects key=value, got {item!r}")
            key, raw = item.split("=", 1)
            data[key] = configs.parse_value(raw)
        return configs.build(cls, data, source=str(path) if path else "overrides")

    def validate(self) -> None:
        problems = []
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
        if self.chunk_notes < 0:
            problems.append("chunk_notes must be >= 0 (0 = no GradCache)")
        if self.lora_r < 0 or (self.lora_r and self.lora_alpha <= 0):
            problems.append("lora_r must be >= 0 and lora_alpha > 0")
        if self.lora_r and self.train_top_layers:
            problems.append("lora_r and train_top_layers are two ways to train part of the model: choose one")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append("lora_dropout must be in [0, 1)")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("max_steps must be >= 1")
        if self.save_every < 1 or self.log_every < 1:
            problems.append("save_every and log_every must be >= 1")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PrepareConfig:
    """Prepare training data once for every rank: cleaned pairs as note indices, the used notes
    (Arrow IPC), one unique-note batch plan per epoch, memory-mapped by the trainer."""

    pairs: str = option(help="a PAIRS partition dir <pairs_root>/dt=YYYY-MM-DD (needs _SUCCESS)")
    notes: str = option(help="NOTES file or its root (<root>/notes/notes.parquet)")
    out: str = option(help="the prepared folder (reused when made from the same inputs and settings, else rebuilt)")
    batch_pairs: int = option(DEFAULT_BATCH_PAIRS, help="B related pairs per global batch (the trainer's batch_pairs)")
    seed: int = option(TrainConfig.seed, help="seed of the batch plans (the trainer's seed)")
    epochs: float = option(TrainConfig.epochs, help="plans for ceil(epochs) epochs (the trainer's epochs)")
    max_steps: int | None = option(None, help="plans for as many epochs as these steps reach; wins over epochs")
    max_missing_fraction: float = option(DEFAULT_MAX_MISSING_FRACTION,
                                         help="refuse the data when more pairs than this reference unknown notes")

    def validate(self) -> None:
        if self.batch_pairs < 1:
            raise ValueError("batch_pairs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.epochs <= 0:
            raise ValueError(f"epochs={self.epochs} must be > 0")


@dataclasses.dataclass
class EvaluateConfig:
    """Recall@K and in-batch accuracy of a trained NoteLLM model (and baselines) on held-out pairs."""

    model: str = option(help="model directory written by training (RUN/model)")
    pairs: str = option(help="held-out PAIRS partition dir (needs _SUCCESS)")
    pool: str = option(help="POOL file or partition dir")
    notes: str = option(help="NOTES file or root")
    backbone_baseline: bool = option(False, help="also evaluate the untrained backbone (and the gain over it)")
    approved_root: str | None = option(None, help="also evaluate the approved model of this models root")
    ks: list[int] = option(default_factory=lambda: [10, 50, 100, 1000], help="the K of Recall@K (comma list)")
    batch_pairs: int = option(16, help="pairs per batch for the in-batch accuracy")
    batch_size: int = option(32, help="embedding batch size")
    limit_pairs: int | None = option(None, help="evaluate only the first N test pairs")
    precision: str = option("auto", choices=PRECISIONS,
                            help="embedding precision (notellm.precision: auto = bf16 on GPU and on CPUs with "
                                 "native bf16; on a GPU the models are loaded in that dtype)")
    device: str = option("auto", help="where the models run: auto = cuda when available, else cpu; or cpu, cuda, "
                                      "cuda:N")
    pool_sample: int = option(0, help="evaluate on at most this many pool notes: every test pair's endpoints plus "
                                      "a seeded random sample of the rest (Recall@K is then over that smaller "
                                      "pool); 0 = the whole pool")
    seed: int = option(0, help="seed of the pool sample and of the in-batch accuracy batches")
    embeddings_root: str | None = option(None, help="embedding store root (<root>/embeddings): reuse the approved "
                                                    "model's stored vectors of unchanged notes instead of "
                                                    "embedding them again")
    out: str | None = option(None, help="write the full evaluation JSON here (the result line then summarises)")

    def validate(self) -> None:
        if self.pool_sample < 0:
            raise ValueError(f"pool_sample must be >= 0 (0 = the whole pool), got {self.pool_sample}")
        if self.device not in ("auto", "cpu", "cuda") and not (self.device.startswith("cuda:")
                                                                and self.device[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclasses.dataclass
class RegisterConfig:
    """Quality gate of a trained model; registers it as APPROVED when it passes."""

    model: str = option(help="model directory written by training (RUN/model)")
    metrics: str = option(help="evaluation JSON written by training.evaluate --out")
    models_root: str = option(help="models root holding APPROVED.json and registry.jsonl")
    k: int = option(100, help="the K of the Recall@K the gate compares")
    min_recall: float = option(0.0, help="absolute floor of Recall@K")
    max_regression: float = option(0.01, help="largest allowed Recall@K drop below the approved model")
    baseline_required: bool = option(True, help="require the backbone baseline in the evaluation "
                                                "(--no-baseline-required to skip)")

    def validate(self) -> None:
        if self.min_recall < 0:   # above 1 refuses every model (a test of the gate)
            raise ValueError(f"min_recall must be >= 0, got {self.min_recall}")
        if not 0.0 <= self.max_regression <= 1.0:
            raise ValueError(f"max_regression must be in [0, 1], got {self.max_regression}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclasses.dataclass
class GenerateConfig:
    """Generate categories or hashtags with a trained NoteLLM model (the CSFT side)."""

    model: str = option(help="model directory written by training (RUN/model)")
    notes: str = option(help="NOTES file or root")
    task: str = option("category", choices=("category", "hashtag"), help="what to generate")
    constrained: bool = option(False, help="only emit a known category (task category)")
    limit: int = option(20, help="notes to generate for (the first N) when --note-ids is not given")
    note_ids: list[str] | None = option(None, help="note ids to generate for (comma list)")
    j: int = option(3, help="number of hashtags to generate")
    max_new_tokens: int = option(24, help="decoding budget")

    def validate(self) -> None:
        if self.constrained and self.task != "category":
            raise ValueError("--constrained applies to --task category (the closed set of categories)")


def deepspeed_config_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.json" if name in ("zero2", "zero3") else Path(name)
    if not path.exists():
        raise FileNotFoundError(f"DeepSpeed config {name!r}: {path} does not exist")
    return path


def resolve_deepspeed_config(ds: dict, cfg: TrainConfig, world_size: int, use_bf16: bool) -> dict:
    """Replace the "auto" values (Hugging Face Trainer convention) from the training config.

    We call ``deepspeed.initialize`` ourselves, and DeepSpeed itself does not
    understand "auto", so every "auto" must be resolved here:
    notes per rank n = 2 * batch_pairs / world; without GradCache one micro batch
    of n notes and gradient accumulation 1 (GCL needs the whole batch in one
    step); with ``chunk_notes`` = c, micro batches of c notes and n / c
    accumulation steps, which are GradCache's chunks of one optimizer step, not
    separate batches. Then clipping, bf16, and the ZeRO-3 bucket sizes (from the
    model hidden size, as the HF integration does).
    """
    ds = json.loads(json.dumps(ds))
    if (2 * cfg.batch_pairs) % world_size:
        raise ValueError(f"batch_pairs={cfg.batch_pairs}: the 2B = {2 * cfg.batch_pairs} notes of a global batch "
                         f"do not split evenly over {world_size} ranks")
    notes_per_rank = 2 * cfg.batch_pairs // world_size
    micro, chunks = notes_per_rank, 1
    if cfg.chunk_notes and cfg.chunk_notes < notes_per_rank:
        if notes_per_rank % cfg.chunk_notes:
            raise ValueError(f"chunk_notes={cfg.chunk_notes} must divide the {notes_per_rank} notes each rank holds "
                             f"(2 * batch_pairs / world size)")
        micro, chunks = cfg.chunk_notes, notes_per_rank // cfg.chunk_notes
    resolved = {
        "train_micro_batch_size_per_gpu": micro,
        "train_batch_size": notes_per_rank * world_size,
        "gradient_accumulation_steps": chunks,
        "gradient_clipping": cfg.grad_clip,
    }
    for key, value in resolved.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    if ds.get("gradient_accumulation_steps") != chunks:
        raise ValueError(f"gradient_accumulation_steps must be {chunks} (GradCache chunks per step): the contrastive "
                         "loss needs the whole batch in one optimizer step; set chunk_notes instead")
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
