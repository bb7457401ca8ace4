"""The held-out ("test") side of the shared data folder's pairwise datasets, for evaluating reward models."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from paretoalign.data.schema import PreferencePair


def sample_per_dataset(pairs: Sequence[PreferencePair], max_per_dataset: int | None,
                       seed: int) -> list[PreferencePair]:
    """At most `max_per_dataset` pairs of each dataset (the first part of a pair's subset), drawn with `seed`; the
    datasets in name order, a dataset that fits kept whole and in order (None: every pair)."""
    if max_per_dataset is None:
        return list(pairs)
    by_dataset: dict[str, list[PreferencePair]] = {}
    for p in pairs:
        by_dataset.setdefault((p.subset or "").split("/")[0], []).append(p)
    rng = random.Random(seed)
    picked: list[PreferencePair] = []
    for name in sorted(by_dataset):
        group = by_dataset[name]
        picked.extend(group if len(group) <= max_per_dataset else rng.sample(group, max_per_dataset))
    return picked


def shared_heldout_pairs(shared_dir: str | os.PathLike, max_per_dataset: int | None,
                         seed: int) -> list[PreferencePair]:
    """The held-out ("test") side of every pairwise dataset in the shared data folder (see `sample_per_dataset`)."""
    from paretoalign.data.bundled import shared_data_config
    from paretoalign.data.sources import load_training_data
    from paretoalign.data.splits import split_pairs

    config = shared_data_config(shared_dir)
    data = load_training_data(config)
    _, test = split_pairs(data.pairs, config.heldout_fraction, config.seed)
    return sample_per_dataset(test, max_per_dataset, seed)
