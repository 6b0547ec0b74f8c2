from __future__ import annotations

import numpy as np
import pytest

from recstream.streams.kernels import fold_steps


def _plain_fold(
    matrix: np.ndarray,
    rows: np.ndarray,
    decays: np.ndarray,
    weights: np.ndarray,
    item_rows: np.ndarray,
    items: np.ndarray,
) -> np.ndarray:
    out = matrix.copy()
    for row, decay, weight, item in zip(rows, decays, weights, item_rows, strict=True):
        x = decay * out[row] + weight * items[item].astype(np.float64)
        norm = np.linalg.norm(x)
        out[row] = x / norm if norm > 1e-12 else 0.0
    return out


def test_steps_apply_in_order_per_row_as_a_plain_loop_does() -> None:
    rng = np.random.default_rng(7)
    matrix = rng.normal(size=(5, 16))
    matrix[2] = 0.0  # a user without a vector yet
    items = rng.normal(size=(9, 16)).astype(np.float32)
    steps = 200
    rows = rng.integers(0, 5, size=steps)
    decays = rng.uniform(0.1, 1.0, size=steps)
    weights = rng.choice([-1.0, 0.5, 1.0, 3.0], size=steps)
    item_rows = rng.integers(0, 9, size=steps)
    expected = _plain_fold(matrix, rows, decays, weights, item_rows, items)
    fold_steps(matrix, rows, decays, weights, item_rows, items)
    np.testing.assert_allclose(matrix, expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0)


def test_a_step_that_cancels_the_vector_leaves_the_zero_vector() -> None:
    items = np.array([[1.0, 0.0]], dtype=np.float32)
    matrix = np.array([[1.0, 0.0]])
    fold_steps(matrix, np.array([0]), np.array([1.0]), np.array([-1.0]), np.array([0]), items)
    assert matrix.tolist() == [[0.0, 0.0]]
    fold_steps(matrix, np.array([0]), np.array([1.0]), np.array([2.0]), np.array([0]), items)
    assert matrix.tolist() == [[1.0, 0.0]]


def test_mismatched_steps_and_indexes_outside_are_refused() -> None:
    matrix, items = np.zeros((2, 3)), np.ones((2, 3), dtype=np.float32)
    one, zero = np.array([1.0]), np.array([0])
    with pytest.raises(ValueError, match="same length"):
        fold_steps(matrix, np.array([0, 1]), one, one, zero, items)
    with pytest.raises(IndexError):
        fold_steps(matrix, np.array([2]), one, one, zero, items)
    with pytest.raises(IndexError):
        fold_steps(matrix, zero, one, one, np.array([-1]), items)
    with pytest.raises(ValueError, match="dimension"):
        fold_steps(matrix, zero, one, one, zero, np.ones((2, 4), dtype=np.float32))
    assert not matrix.any()  # nothing was applied
