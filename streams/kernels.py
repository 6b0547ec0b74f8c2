"""Compiled (numba) inner loops of the interaction processor.

The session-vector update is a recurrence per user: each step needs the previous normalised
vector. In numpy it was one round per step depth over the users still active, and a skewed
stream (one user with hundreds of events in a batch) ended in hundreds of 1-d numpy calls of a
few microseconds each. Compiled, one pass over the steps in order costs about what the
arithmetic costs, and it runs without the GIL, so the query worker and the Redis writer thread
keep going meanwhile.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

NORM_EPSILON = 1e-12  # a vector shorter than this is the zero vector (no direction left)


@numba.njit(nogil=True, cache=True)
def _fold_steps(
    matrix: npt.NDArray[np.float64],
    rows: npt.NDArray[np.int64],
    decays: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    item_rows: npt.NDArray[np.int64],
    items: npt.NDArray[np.float32],
) -> None:
    dimension = matrix.shape[1]
    for step in range(rows.shape[0]):
        row, item = rows[step], item_rows[step]
        decay, weight = decays[step], weights[step]
        squared = 0.0
        for j in range(dimension):
            value = decay * matrix[row, j] + weight * items[item, j]
            matrix[row, j] = value
            squared += value * value
        norm = math.sqrt(squared)
        scale = 1.0 / norm if norm > NORM_EPSILON else 0.0
        for j in range(dimension):
            matrix[row, j] *= scale


def fold_steps(
    matrix: npt.NDArray[np.float64],
    rows: npt.NDArray[np.int64],
    decays: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    item_rows: npt.NDArray[np.int64],
    items: npt.NDArray[np.float32],
) -> None:
    """Apply steps in order, in place: matrix[r] <- normalize(d * matrix[r] + w * items[i])
    for each (r, d, w, i) of (rows, decays, weights, item_rows). A result shorter than
    NORM_EPSILON becomes the zero vector."""
    if not (len(rows) == len(decays) == len(weights) == len(item_rows)):
        raise ValueError("rows, decays, weights and item_rows must have the same length")
    if len(rows) and not (_within(rows, len(matrix)) and _within(item_rows, len(items))):
        raise IndexError("a step points outside the matrix or the items")
    if matrix.shape[1] != items.shape[1]:
        raise ValueError(f"dimension {matrix.shape[1]} != item dimension {items.shape[1]}")
    _fold_steps(matrix, rows, decays, weights, item_rows, items)


def _within(indexes: npt.NDArray[np.int64], size: int) -> bool:
    return bool(indexes.min() >= 0 and indexes.max() < size)


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops now, with the types the processor passes,
    so the first batch does not pay for it (about a second, holding the GIL)."""
    matrix, items = np.zeros((1, 2)), np.ones((1, 2), dtype=np.float32)
    index, one = np.zeros(1, dtype=np.int64), np.ones(1)
    fold_steps(matrix, index, one, one, index, items)
