"""The one float comparison of the test suite: a tolerance that scales with the values compared.

Two kinds of error are allowed, each stated where a test compares:
- ``rtol``: the method's own error relative to each value (an approximation, another library's
  kernels, a float64 reference that still runs its softmax in float32);
- ``ulps``: float rounding of "the same maths in another summation order" (another thread count,
  a window of rows, a fused kernel), in units of the dtype's machine epsilon at the compared
  values' largest magnitude. 1 ulp of float32 at 3.0 is 2.4e-7, so a fixed ``atol=1e-6`` is 4 ulps
  there and 0.4 ulps at 30: an absolute tolerance holds or fails with the random draw.
- ``atol`` only where the expected value is exactly zero by construction (nothing to scale with).
"""
from __future__ import annotations

import numpy as np
import torch


def _as_float64(x) -> tuple[np.ndarray, float]:
    """x as a float64 array, and the machine epsilon of the precision it was computed in."""
    if isinstance(x, torch.Tensor):
        eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0
        return x.detach().to(torch.float64).cpu().numpy(), eps
    arr = np.asarray(x)
    eps = float(np.finfo(arr.dtype).eps) if np.issubdtype(arr.dtype, np.floating) else 0.0
    return arr.astype(np.float64), eps


def tolerance(expected, rtol: float = 0.0, ulps: float = 8, atol: float = 0.0, eps: float | None = None) -> np.ndarray:
    """Allowed |actual - expected| per element: rtol·|e| + ulps·eps·max|e| + atol."""
    e, e_eps = _as_float64(expected)
    eps = e_eps if eps is None else eps
    scale = float(np.abs(e).max()) if e.size else 0.0
    return rtol * np.abs(e) + ulps * eps * scale + atol


def assert_close(actual, expected, *, rtol: float = 0.0, ulps: float = 8, atol: float = 0.0, what: str = "") -> None:
    """Assert ``actual`` ≈ ``expected`` elementwise within ``tolerance`` (shapes must broadcast equal).

    eps is the coarser of the two inputs' precisions (a float32 result against a float64 reference
    is a float32 result). Tensors, arrays, lists and Python floats are all accepted.
    """
    a, a_eps = _as_float64(actual)
    e, e_eps = _as_float64(expected)
    if a.shape != e.shape and not (a.size == 1 and e.size == 1):
        a, e = np.broadcast_arrays(a, e)
    allowed = tolerance(e, rtol, ulps, atol, eps=max(a_eps, e_eps))
    err = np.abs(a - e)
    bad = ~(err <= allowed)  # NaN counts as bad
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err - allowed, -np.inf))), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{what + ': ' if what else ''}{int(bad.sum())} of {err.size} values differ; worst at {i}: "
            f"actual {a[i]!r}, expected {e[i]!r}, |diff| {err[i]:.3g} > allowed {allowed[i]:.3g} "
            f"(rtol {rtol:g}, {ulps:g} ulps of max|expected| {np.abs(e).max():.3g}, atol {atol:g})"
        )


def close(actual, expected, *, rtol: float = 0.0, ulps: float = 8, atol: float = 0.0) -> bool:
    """The same test as ``assert_close``, as a bool (for ``any``/``all`` over candidates)."""
    try:
        assert_close(actual, expected, rtol=rtol, ulps=ulps, atol=atol)
    except AssertionError:
        return False
    return True
