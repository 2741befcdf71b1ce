"""This rank's tokenised batches, by step, read and tokenised in DataLoader workers.

:class:`StepBatches` is a map-style Dataset over global steps: item ``step`` is this
rank's collated rows of global batch ``step`` (its [a; b] slice, CSFT tasks assigned
from (seed, step), prompts encoded, right-padded with labels), exactly what the
trainer built in its own process before. It holds the memory-mapped
:class:`training.prepared.PreparedData`, the PromptBuilder (tokenizer + template)
and the pad id, all picklable (a worker started by spawn reopens the maps by path;
with fork it shares them). :class:`BatchStream` hands batches to the training loop:
steps asked in order come from one DataLoader over ``range(first step, steps)``
with ``workers`` processes prefetching; any other step is built on the spot.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from notellm.collator import collate
from training.data import local_examples
from training.prepared import PreparedData


class StepBatches(Dataset):
    def __init__(self, data: PreparedData, prompts, pad_token_id: int | None, r: float, seed: int, rank: int,
                 world_size: int, steps: int):
        self.data, self.prompts, self.pad_token_id = data, prompts, pad_token_id
        self.r, self.seed, self.rank, self.world_size, self.steps = r, seed, rank, world_size, steps

    def __len__(self) -> int:
        return self.steps

    def examples(self, step: int) -> list:
        """This rank's examples of global batch ``step``."""
        examples = self.data.batch_examples(self.data.global_batch(step), self.r, self.seed, step)
        return local_examples(examples, self.rank, self.world_size)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        encoded = [self.prompts.encode(e.note, task=e.task, hashtags_out=e.hashtags_out)
                   for e in self.examples(int(step))]
        return collate(encoded, self.pad_token_id, with_labels=True)


def step_loader(dataset: StepBatches, first: int, workers: int) -> DataLoader:
    """Items ``first .. len(dataset) - 1`` in order (no automatic batching: an item is a batch)."""
    return DataLoader(dataset, batch_size=None, sampler=range(first, len(dataset)), num_workers=workers,
                      persistent_workers=False)


class BatchStream:
    """``get(step)``: the batch of ``step``, prefetched by workers while steps come in order."""

    def __init__(self, dataset: StepBatches, workers: int):
        self.dataset, self.workers = dataset, max(0, int(workers))
        self._it = None
        self._next = None

    def get(self, step: int) -> dict[str, torch.Tensor]:
        if self.workers == 0 or not 0 <= step < len(self.dataset):
            return self.dataset[step]
        if self._it is None or self._next != step:
            self.close()
            self._it, self._next = iter(step_loader(self.dataset, step, self.workers)), step
        batch = next(self._it)
        self._next += 1
        if self._next == len(self.dataset):
            self.close()   # the workers exit with their iterator
        return batch

    def close(self) -> None:
        self._it = self._next = None
