"""The quality report's systems with their models on a device (issue 18, the GPU run).

:mod:`evaluation.registry`'s systems take the device their models live on (``cpu`` for the CPU
report); on the GPU host :func:`device_systems` gives them ``cuda``: MiniLM loaded there in fp32
(the bundle's fp16 copy too, :func:`evaluation.systems.load_minilm`), its fine-tuning batches
moved there, the NoteLLM encoders moved there after loading. NoteLLM's training needs nothing
here: ``training.train`` puts itself on CUDA (bf16).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform


def device_systems(device: str) -> dict:
    """The report's systems (:mod:`evaluation.registry`) with their models on ``device``: the same
    keys, training runs and scores, only where the tensors live differs (and the NoteLLM runs
    checkpoint once, at the end: the registry's also save half way, ~2 GB more to write)."""
    from evaluation import registry

    out = {}
    for key, system in registry.SYSTEMS.items():
        out[key] = on_device = type(system)(device)
        if isinstance(on_device, registry.NoteLLMSystem):
            on_device.variant = {**system.variant, "save_every": 1_000_000}
    return out


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
