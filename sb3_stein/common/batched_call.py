"""One casadi Function of one sample, evaluated over a batch of numpy rows in one mapped call.

casadi's ``FunctionBuffer`` reads and writes numpy memory in place, so the batch never goes through
casadi matrices: measured on the MPC layer (issue 15), converting numpy arrays to ``DM`` and back cost
more than the arithmetic of a mapped call (an MX Newton step for 64 cart-pole samples: 0.27 ms of
compute, 0.5 ms with the conversions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bucket", "call_batched"]


def call_batched(
    cache: dict[tuple[str, int, int], Any], function: Any, args: list[np.ndarray], n_threads: int = 1
) -> list[np.ndarray]:
    """Evaluate ``function`` (one sample, dense outputs) on every row of ``args``.

    :param cache: where the mapped Functions and their buffers are kept, by name, padded batch size and
        threads (the caller owns it; it is not picklable).
    :param function: a casadi Function of one sample.
    :param args: one array per input, ``(b, columns, rows)`` (the column-major ``(rows, columns)`` input of
        each row), or ``(b, n)`` for a vector input (``(b,)`` for a scalar).
    :param n_threads: threads of the mapped call (casadi's ``map(..., "thread", n)``).
    :return: one array per output, ``(b, columns, rows)`` (``(b,)`` for a scalar).
    """
    n = len(args[0])
    if n == 0:
        return [
            np.empty((0,) if function.numel_out(i) == 1 else (0, *function.size_out(i)[::-1]))
            for i in range(function.n_out())
        ]
    b = bucket(n)
    threads = max(1, min(n_threads, b))
    key = (function.name(), b, threads)
    if key not in cache:
        # (a sparse input or output would be read or written as its nonzeros only, and misplaced below)
        if not all(function.sparsity_in(i).is_dense() for i in range(function.n_in())) or not all(
            function.sparsity_out(i).is_dense() for i in range(function.n_out())
        ):
            raise ValueError(
                f"call_batched needs dense inputs and outputs; {function.name()} has a sparse one"
            )
        # A C-ordered (b, columns, rows) array is, byte for byte, the column-major (rows, b * columns)
        # matrix of the mapped call.
        mapped = function.map(b, "thread", threads) if threads > 1 else function.map(b) if b > 1 else function
        sizes_in = [function.numel_in(i) for i in range(function.n_in())]
        shapes_out = [function.size_out(i) for i in range(function.n_out())]
        cache[key] = (mapped, *mapped.buffer(), sizes_in, shapes_out)
    _, buffer, evaluate, sizes_in, shapes_out = cache[key]
    if len(args) != len(sizes_in):
        raise ValueError(f"{function.name()} takes {len(sizes_in)} inputs, got {len(args)}")
    inputs = []
    for i, a in enumerate(args):
        a = np.asarray(a, dtype=np.float64)
        # casadi only checks that a buffer is not too small: a wrong size would shift the rows after the first
        if len(a) != n or a.size != n * sizes_in[i]:
            raise ValueError(
                f"input {function.name_in(i)} of {function.name()}: expected {n} rows of {sizes_in[i]} "
                f"entries, got shape {a.shape}"
            )
        if b > n:
            a = np.concatenate([a, np.repeat(a[-1:], b - n, axis=0)])
        inputs.append(np.ascontiguousarray(a).reshape(-1))
    for i, a in enumerate(inputs):
        buffer.set_arg(i, memoryview(a))  # type: ignore[arg-type]
    result = []
    for i, (rows, cols) in enumerate(shapes_out):
        out = np.empty(b * rows * cols)
        buffer.set_res(i, memoryview(out))  # type: ignore[arg-type]
        result.append(out if rows == cols == 1 else out.reshape(b, cols, rows))
    evaluate()
    return [r[:n] for r in result]


def bucket(n: int) -> int:
    """The padded batch size of ``n`` rows: ``n`` up to 16, above it the next of 8 sizes per power of two
    (18, 20, ..., 32, 36, ...). Building a mapped Function and its buffer costs about half a millisecond,
    too much for every size the active rows of an iterative solve pass through; padding to a power of two
    wasted about a quarter of the evaluations."""
    if n <= 16:
        return max(n, 1)
    step = 1 << ((n - 1).bit_length() - 4)
    return -(-n // step) * step
