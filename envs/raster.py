"""Anti-aliased drawing on float RGB images in world coordinates, shared by the 2-D environments."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def blend(img: FloatArray, alpha: FloatArray, color: FloatArray, rows: slice, cols: slice) -> None:
    """Blend ``color`` into ``img[rows, cols]`` with per-pixel opacity ``alpha`` (in place)."""
    sub = img[rows, cols]
    sub += alpha[..., None] * (color - sub)


def draw_segment(
    img: FloatArray,
    xs: FloatArray,
    ys: FloatArray,
    p: FloatArray,
    q: FloatArray,
    width: float,
    color: FloatArray,
    px: float,
) -> None:
    """Anti-aliased thick segment ``p -> q`` (world units) on the float image, within its bounding box."""
    size = img.shape[0]
    lo = np.minimum(p, q) - width - 2 * px
    hi = np.maximum(p, q) + width + 2 * px
    c0, c1 = np.searchsorted(xs, lo[0]), np.searchsorted(xs, hi[0])
    r0, r1 = size - np.searchsorted(ys, hi[1]), size - np.searchsorted(ys, lo[1])
    c0, c1, r0, r1 = max(c0, 0), min(c1, size), max(r0, 0), min(r1, size)
    if c0 >= c1 or r0 >= r1:
        return
    gx = xs[c0:c1][None, :]
    gy = ys[::-1][r0:r1][:, None]
    d = q - p
    dd = float(d @ d)
    t = np.zeros((1, 1)) if dd == 0.0 else np.clip(((gx - p[0]) * d[0] + (gy - p[1]) * d[1]) / dd, 0.0, 1.0)
    dist = np.hypot(gx - (p[0] + t * d[0]), gy - (p[1] + t * d[1]))
    alpha = np.clip((width - dist) / px + 0.5, 0.0, 1.0)
    blend(img, alpha, color, slice(r0, r1), slice(c0, c1))


def pixel_grid(size: int, bound: float) -> tuple[FloatArray, float]:
    """Pixel-centre world coordinates along one axis (x for columns; y uses the same grid reversed) and the
    world size of a pixel."""
    extent = 1.05 * bound
    px = 2 * extent / size
    return (-extent + (np.arange(size) + 0.5) * px).astype(np.float64), px
