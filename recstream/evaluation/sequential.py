"""The sequential baseline: a compact GRU4Rec (Hidasi et al., 2016) trained on the CPU. Each
user's training events, in time order, are a sequence of items; a GRU reads it and scores every
item as the next one (full softmax against the item embeddings, weights tied). Training budget:
a fixed number of epochs over windows of the last MAX_LENGTH items, on the machine's threads;
the evaluation tunes the epochs and the size on validation (docs/evaluation.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from recstream.evaluation.baselines import Interactions, MostPopular
from recstream.schemas.events import InteractionEvent

MAX_LENGTH = 50  # items of history the GRU reads (training windows and queries)
BATCH = 64


@dataclass(frozen=True)
class GruParams:
    size: int = 64  # item embedding and hidden state
    learning_rate: float = 0.003
    dropout: float = 0.2
    seed: int = 3


def sequences(events: Sequence[InteractionEvent], column: dict[str, int]) -> dict[str, list[int]]:
    """Each user's catalog items in event order, as item numbers from 1 (0 pads)."""
    found: dict[str, list[int]] = {}
    for event in sorted(events, key=lambda e: (e.event_time, e.event_id)):
        if event.item_id in column:
            found.setdefault(event.user_id, []).append(column[event.item_id] + 1)
    return found


def windows(history: list[int], length: int = MAX_LENGTH) -> list[list[int]]:
    """Non-overlapping windows of length + 1 items (input and its next-item targets), the last
    one ending at the newest item; a history of one item gives none."""
    found = []
    end = len(history)
    while end > 1:
        start = max(0, end - length - 1)
        found.append(history[start:end])
        end = start + 1 if start > 0 else 0
    return found


class Gru4Rec:
    """Next-item GRU over each user's training sequence; users without one get popularity."""

    def __init__(
        self, data: Interactions, events: Sequence[InteractionEvent], params: GruParams
    ) -> None:
        self._data = data
        self._popular = MostPopular(data)
        column = {item: n for n, item in enumerate(data.items)}
        self._sequences = sequences(events, column)
        torch.manual_seed(params.seed)
        self._model = _Network(len(data.items) + 1, params.size, params.dropout)
        self._optimiser = torch.optim.Adam(self._model.parameters(), lr=params.learning_rate)
        self._windows = [w for s in self._sequences.values() for w in windows(s)]
        self._rng = np.random.default_rng(params.seed)
        self.epochs = 0

    def train(self, stages: Sequence[int]) -> Iterator[int]:
        """Train up to each number of epochs in turn, yielding it (to score the model there)."""
        for target in stages:
            while self.epochs < target:
                self._epoch()
                self.epochs += 1
            yield target

    def _epoch(self) -> None:
        self._model.train()
        order = self._rng.permutation(len(self._windows))
        for start in range(0, len(order), BATCH):
            batch = [self._windows[i] for i in order[start : start + BATCH]]
            inputs, targets = _padded(batch)
            logits = self._model(torch.from_numpy(inputs))
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                torch.from_numpy(targets).reshape(-1),
                ignore_index=0,
            )
            self._optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            self._optimiser.step()

    def recommend(self, user: str, k: int) -> list[str]:
        history = self._sequences.get(user)
        if not history:
            return self._popular.recommend(user, k)
        self._model.eval()
        with torch.no_grad():
            inputs = torch.tensor([history[-MAX_LENGTH:]])
            scores = self._model(inputs)[0, -1, 1:].double().numpy()  # column 0 is the padding
        return self._data.top(scores, user, k)


def _padded(batch: list[list[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Inputs and next-item targets, right-padded with 0 to the longest window: the GRU reads
    left to right, so a position's state never sees the padding after it."""
    width = max(len(w) for w in batch) - 1
    inputs = np.zeros((len(batch), width), dtype=np.int64)
    targets = np.zeros((len(batch), width), dtype=np.int64)
    for row, window in enumerate(batch):
        inputs[row, : len(window) - 1] = window[:-1]
        targets[row, : len(window) - 1] = window[1:]
    return inputs, targets


class _Network(torch.nn.Module):
    def __init__(self, items: int, size: int, dropout: float) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(items, size, padding_idx=0)
        self.dropout = torch.nn.Dropout(dropout)
        self.gru = torch.nn.GRU(size, size, batch_first=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.dropout(self.embedding(inputs)))
        scores: torch.Tensor = states @ self.embedding.weight.T  # tied: against every item
        return scores
