"""Balanced sampling by group: the training faces of every group (UTKFace's race, a CSV's
``group``) repeated until each group counts as many as the largest.

Done by the harness on the arrays before a backend sees them, so both frameworks train
on the same faces in the same numbers. Only the training split is resampled: validation
and test faces (and every metric) stay as they are.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["balanced_rows"]


def balanced_rows(groups, seed: int) -> np.ndarray:
    """Row indices into ``groups`` (one label per training face; NaN or None: no group):
    every row once, plus rows drawn with replacement (seeded) from each smaller group up
    to the largest group's count. Faces without a group are kept once and not drawn."""
    labels = pd.Series(groups, dtype=object)
    known = labels.notna()
    if not known.any():
        raise ValueError("training.balance: group needs each training face's group, and these faces have none "
                         "(UTKFace gives race; a CSV dataset a 'group' column; Adience has none)")
    rng = np.random.default_rng(seed)
    counts = labels[known].value_counts()
    largest = int(counts.max())
    extra = [rng.choice(np.flatnonzero((labels == group).to_numpy()), largest - int(n), replace=True)
             for group, n in sorted(counts.items(), key=lambda item: str(item[0])) if n < largest]
    return np.concatenate([np.arange(len(labels))] + extra).astype(np.int64)
