"""Sentence embeddings for item text (and onboarding text), loaded offline from a local folder."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recstream.core.index import Vector

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"


class SentenceTransformerEmbedder:
    """sentence-transformers on the CPU; `embed` is thread-safe, meant to run off the event loop."""

    def __init__(
        self, model_path: Path, model_id: str, threads: int = 2, batch_size: int = 64
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights ship in the package: never the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(model_path), device="cpu")
        self._model_id = model_id
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"model at {model_path} does not report an embedding dimension")
        self._dimension = int(dimension)
        self._batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Vector:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


def model_id_for(model_path: Path | None) -> str:
    """A stable model id: the shipped default's name, else the model folder's name."""
    return DEFAULT_MODEL_ID if model_path is None else model_path.resolve().name
