"""One stage of the Riccati recursion as a small C kernel with loops (casadi ``Function.jit``), for large
states.

Why (issue 15): casadi's scalar expansion of a dense stage is straight-line code of ``O(nx^2 (nx + nu))``
instructions. For the chain (``nx = 21``, ``nu = 3``) that is 39k casadi instructions, about 460 kB of
machine code per stage, run at about one floating-point operation per cycle. The same arithmetic as loops
over the columns of column-major matrices (dot products in 2 x 2 blocks: four independent sums, each loaded
column used twice) is a few kB of code. Measured on the chain (16 states near a reset state, one process,
min of 7 rounds, flags ``-O1``): the forward solve took 8.9 ms per sample with the kernel, 10.2 ms with the
scalar stage; ``perf`` put the stage at 34 % of the solve before and 18 % after.

The kernel computes exactly what :class:`sb3_stein.common.riccati_ipm.RiccatiIPM`'s symbolic stage does
(the same inputs and outputs, see there), with ``G = [B, A]`` the linearised dynamics in the stage's
``(u, x)`` order::

    Q  = H + diag(sig_u, sig_x) + delta I + G' P_next G            (upper triangle only)
    q  = g + (gb_u, gb_x) + G' (P_next c + p_next)
    Q_uu = L L'   (Cholesky; min_pivot = the smallest pivot / the largest |diagonal entry|)
    K  = -Q_uu^-1 Q_ux,   kff = -Q_uu^-1 q_u
    P  = Q_xx + Q_ux' K   (upper triangle, mirrored),   p = q_x + Q_ux' kff

Sums run in another order than in the symbolic stage, so results agree to rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any

__all__ = ["riccati_stage_c", "stage_source"]

#: The kernel's inputs and outputs: those of the symbolic stage in ``RiccatiIPM._build``.
NAMES_IN = ["H", "A", "B", "c", "g", "sig_u", "sig_x", "gb_u", "gb_x", "P_next", "p_next", "delta"]
NAMES_OUT = ["P_k", "p_k", "K", "kff", "min_pivot"]


def stage_source(nx: int, nu: int) -> str:
    """The kernel's C body for ``nx`` states and ``nu`` controls (the sizes are literals, so the C compiler
    knows every loop's length). casadi declares the inputs and outputs as pointers named as
    :data:`NAMES_IN` and :data:`NAMES_OUT`, column-major."""
    m = nx + nu
    return f"""
  /* G = [B, A]: column j of the dynamics' Jacobian in (u, x) order */
  const casadi_real *G[{m}];
  casadi_real M[{nx * m}], Q[{m * m}], q[{m}], Pc[{nx}], L[{nu * nu}], S[{nu * (nx + 1)}];
  casadi_real s00, s01, s10, s11, a0, a1, b0, b1, piv, root, scale, min_piv;
  const casadi_real *x0, *x1, *y0, *y1;
  int i, j, k, r, i1, j1;
  for (j = 0; j < {nu}; ++j) G[j] = B + j * {nx};
  for (j = 0; j < {nx}; ++j) G[{nu} + j] = A + j * {nx};
  /* Pc = P_next c + p_next (P_next is symmetric: row i is column i) */
  for (i = 0; i < {nx}; ++i) {{
    s00 = 0;
    for (k = 0; k < {nx}; ++k) s00 += P_next[k + i * {nx}] * c[k];
    Pc[i] = s00 + p_next[i];
  }}
  /* M = P_next G, M[i, j] = P_next[:, i] . G[:, j], in 2 x 2 blocks (an odd last row or column is
     computed twice, to the same value) */
  for (j = 0; j < {m}; j += 2) {{
    j1 = j + 1 < {m} ? j + 1 : j;
    y0 = G[j]; y1 = G[j1];
    for (i = 0; i < {nx}; i += 2) {{
      i1 = i + 1 < {nx} ? i + 1 : i;
      x0 = P_next + i * {nx}; x1 = P_next + i1 * {nx};
      s00 = s01 = s10 = s11 = 0;
      for (k = 0; k < {nx}; ++k) {{
        a0 = x0[k]; a1 = x1[k]; b0 = y0[k]; b1 = y1[k];
        s00 += a0 * b0; s01 += a0 * b1; s10 += a1 * b0; s11 += a1 * b1;
      }}
      M[i + j * {nx}] = s00; M[i + j1 * {nx}] = s01; M[i1 + j * {nx}] = s10; M[i1 + j1 * {nx}] = s11;
    }}
  }}
  /* Q = H + G' M on and above the diagonal (blocks that touch it), Q[i, j] = G[:, i] . M[:, j] */
  for (j = 0; j < {m}; j += 2) {{
    j1 = j + 1 < {m} ? j + 1 : j;
    y0 = M + j * {nx}; y1 = M + j1 * {nx};
    for (i = 0; i <= j; i += 2) {{
      i1 = i + 1 < {m} ? i + 1 : i;
      x0 = G[i]; x1 = G[i1];
      s00 = s01 = s10 = s11 = 0;
      for (k = 0; k < {nx}; ++k) {{
        a0 = x0[k]; a1 = x1[k]; b0 = y0[k]; b1 = y1[k];
        s00 += a0 * b0; s01 += a0 * b1; s10 += a1 * b0; s11 += a1 * b1;
      }}
      Q[i + j * {m}] = H[i + j * {m}] + s00; Q[i + j1 * {m}] = H[i + j1 * {m}] + s01;
      Q[i1 + j * {m}] = H[i1 + j * {m}] + s10; Q[i1 + j1 * {m}] = H[i1 + j1 * {m}] + s11;
    }}
  }}
  for (i = 0; i < {nu}; ++i) {{
    Q[i * {m + 1}] += sig_u[i] + delta[0];
    s00 = 0;
    for (k = 0; k < {nx}; ++k) s00 += G[i][k] * Pc[k];
    q[i] = g[i] + gb_u[i] + s00;
  }}
  for (i = 0; i < {nx}; ++i) {{
    Q[({nu} + i) * {m + 1}] += sig_x[i] + delta[0];
    s00 = 0;
    for (k = 0; k < {nx}; ++k) s00 += G[{nu} + i][k] * Pc[k];
    q[{nu} + i] = g[{nu} + i] + gb_x[i] + s00;
  }}
  /* Cholesky of Q_uu (its upper triangle): L lower, column-major; pivots relative to the largest |diagonal|,
     roots of max(pivot, 1e-300) as the symbolic stage */
  scale = 0;
  for (i = 0; i < {nu}; ++i) scale = fmax(scale, fabs(Q[i * {m + 1}]));
  scale += 1e-300;
  min_piv = 0;
  for (j = 0; j < {nu}; ++j) {{
    piv = Q[j * {m + 1}];
    for (r = 0; r < j; ++r) piv -= L[j + r * {nu}] * L[j + r * {nu}];
    min_piv = j == 0 ? piv / scale : fmin(min_piv, piv / scale);
    root = sqrt(fmax(piv, 1e-300));
    L[j + j * {nu}] = root;
    for (i = j + 1; i < {nu}; ++i) {{
      s00 = Q[j + i * {m}];
      for (r = 0; r < j; ++r) s00 -= L[i + r * {nu}] * L[j + r * {nu}];
      L[i + j * {nu}] = s00 / root;
    }}
  }}
  min_pivot[0] = min_piv;
  /* S = Q_uu^-1 [Q_ux, q_u]: forward then backward substitution, column by column */
  for (j = 0; j <= {nx}; ++j) {{
    for (i = 0; i < {nu}; ++i) {{
      s00 = j < {nx} ? Q[i + ({nu} + j) * {m}] : q[i];
      for (r = 0; r < i; ++r) s00 -= L[i + r * {nu}] * S[r + j * {nu}];
      S[i + j * {nu}] = s00 / L[i + i * {nu}];
    }}
    for (i = {nu} - 1; i >= 0; --i) {{
      s00 = S[i + j * {nu}];
      for (r = i + 1; r < {nu}; ++r) s00 -= L[r + i * {nu}] * S[r + j * {nu}];
      S[i + j * {nu}] = s00 / L[i + i * {nu}];
    }}
  }}
  for (j = 0; j < {nx}; ++j)
    for (i = 0; i < {nu}; ++i) K[i + j * {nu}] = -S[i + j * {nu}];
  for (i = 0; i < {nu}; ++i) kff[i] = -S[i + {nx * nu}];
  /* P = Q_xx + Q_ux' K = Q_xx - Q_ux' S (upper, mirrored), p = q_x - Q_ux' S[:, nx] */
  for (j = 0; j < {nx}; ++j) {{
    for (i = 0; i <= j; ++i) {{
      s00 = Q[({nu} + i) + ({nu} + j) * {m}];
      for (r = 0; r < {nu}; ++r) s00 -= Q[r + ({nu} + i) * {m}] * S[r + j * {nu}];
      P_k[i + j * {nx}] = s00; P_k[j + i * {nx}] = s00;
    }}
    s00 = q[{nu} + j];
    for (r = 0; r < {nu}; ++r) s00 -= Q[r + ({nu} + j) * {m}] * S[r + {nx * nu}];
    p_k[j] = s00;
  }}
"""


def riccati_stage_c(nx: int, nu: int, options: dict[str, Any]) -> Any:
    """The stage kernel as a casadi Function (``Function.jit``), compiled with ``options``' compiler
    settings (:func:`sb3_stein.common.jit_cache.jit_options`); casadi code-generates it into the Functions
    that call it. It has no derivatives (the solver needs none of the stage).

    :param nx: state size.
    :param nu: control size.
    :param options: JIT options (``compiler``, ``jit_options`` and a ``jit_name`` of its own); a ``jit``
        flag in them is dropped (``Function.jit`` compiles anyway).
    """
    import casadi as ca

    m = nx + nu
    dense = ca.Sparsity.dense
    sizes_in = [(m, m), (nx, nx), (nx, nu), (nx, 1), (m, 1), (nu, 1), (nx, 1), (nu, 1), (nx, 1), (nx, nx)]
    sizes_in += [(nx, 1), (1, 1)]
    sizes_out = [(nx, nx), (nx, 1), (nu, nx), (nu, 1), (1, 1)]
    jit = {key: value for key, value in options.items() if key != "jit"}
    return ca.Function.jit(
        f"riccati_stage_c_{nx}_{nu}",
        stage_source(nx, nu),
        NAMES_IN,
        NAMES_OUT,
        [dense(*s) for s in sizes_in],
        [dense(*s) for s in sizes_out],
        jit,
    )
