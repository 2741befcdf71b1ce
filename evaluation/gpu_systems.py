"""The quality report's systems with their models on a device (issue 18, the GPU run).

:mod:`evaluation.registry` loads every model on the CPU (the CPU report); on the GPU host
:func:`device_systems` gives the same systems (same keys, cache keys, training runs and scores)
whose models live on ``cuda``: MiniLM loaded there in fp32 (the bundle's fp16 copy too), its
fine-tuning batches moved there, the NoteLLM encoders moved there after loading. NoteLLM's
training needs nothing here: ``training.train`` puts itself on CUDA (bf16).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform


def load_minilm_on(device: str, model_dir=None):
    """A sentence-transformers model on ``device`` in fp32 (the bundle's fp16 copy too), whose
    ``preprocess`` puts its tensors on that device (the fine-tuning loop calls it directly)."""
    from sentence_transformers import SentenceTransformer

    from notellm.backbone import minilm_dir

    model = SentenceTransformer(str(model_dir or minilm_dir()), device=device).float()
    plain = model.preprocess

    def preprocess(*args, **kwargs):
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in plain(*args, **kwargs).items()}

    model.preprocess = preprocess
    return model


@contextlib.contextmanager
def minilm_on(device: str):
    """``evaluation.systems.load_minilm`` loads on ``device`` while the block runs."""
    from evaluation import systems

    plain = systems.load_minilm
    systems.load_minilm = lambda model_dir=None: load_minilm_on(device, model_dir)
    try:
        yield
    finally:
        systems.load_minilm = plain


def device_systems(device: str) -> dict:
    """The report's systems (:mod:`evaluation.registry`) with their models on ``device``: the same
    keys, cache keys, training runs and scores, only where the tensors live differs."""
    from evaluation import registry, runs

    class MiniLM(registry.MiniLM):
        def fit(self, ctx):
            return registry.Fitted(load_minilm_on(device))

    class MiniLMFineTuned(registry.MiniLMFineTuned):
        def fit(self, ctx):
            with minilm_on(device):
                model_dir, ft = runs.minilm_finetuned(ctx.prepared, ctx.notes_all, ctx.work, ctx.cfg)
            return registry.Fitted(load_minilm_on(device, model_dir), ft)

    def on_device(base):
        class OnDevice(base):
            # one DeepSpeed checkpoint, at the end (the registry's also saves half way: ~2 GB more to write)
            variant = {**base.variant, "save_every": 1_000_000}

            def fit(self, ctx):
                fitted = super().fit(ctx)
                fitted.model.to(device)
                return fitted
        return OnDevice

    ours = {"minilm": MiniLM(), "minilm_ft": MiniLMFineTuned(),
            "notellm_no_csft": on_device(registry.NoteLLMNoCSFT)(), "notellm": on_device(registry.NoteLLM)(),
            "notellm_short": on_device(registry.NoteLLMShort)()}
    return {k: ours.get(k, s) for k, s in registry.SYSTEMS.items()}


def environment(device: str) -> dict:
    import torch

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    env = {"device": device, "python": platform.python_version(), "cpu_cores": os.cpu_count(),
           **{name: version(name) for name in ("torch", "transformers", "sentence-transformers", "deepspeed",
                                               "pyarrow", "numpy")}}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   bf16=torch.cuda.is_bf16_supported())
    return env
