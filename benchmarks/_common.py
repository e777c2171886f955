"""Small helpers shared by the ``peers_*`` runner modules."""

from __future__ import annotations

import logging
import math
import warnings

#: Samples (or observations) used by the small warm-up fit that non-JAX peers run
#: before timing (loads kernels, spins up thread pools, first allocations).
WARMUP_N = 2000


def best(scores: list[float], higher_is_better: bool = True) -> float:
    """Best finite score, or NaN if none is finite."""
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return math.nan
    return max(finite) if higher_is_better else min(finite)


def quiet_lightning() -> None:
    """Silence PyTorch Lightning's per-``fit`` banners and data-loader warnings."""
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
