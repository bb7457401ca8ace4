from collections import Counter

from paretoalign.data import bundled_data_dir, default_sources_config, load_training_data, split_of
from paretoalign.data.bundled import DEFAULT_PAIRS_FILE


def test_bundled_files_exist_and_are_small():
    directory = bundled_data_dir()
    for name in (DEFAULT_PAIRS_FILE, "default_sources.yaml", "README.md", "shared_sources.yaml"):
        assert (directory / name).is_file(), name
    assert (directory / DEFAULT_PAIRS_FILE).stat().st_size < 4e6


def test_default_config_loads_train_side_only():
    config = default_sources_config()
    data = load_training_data(config)
    counts = Counter(p.objective for p in data.pairs)
    # Every train-side pair of the shippable sources (scripts/build_bundled_data.py --all).
    assert counts == {"helpfulness": 4381, "harmlessness": 1644, "instruction_following": 832, "overall": 519,
                      "honesty": 36}
    assert data.ratings == []
    sides = {split_of(p.prompt, fraction=config.heldout_fraction, seed=config.seed) for p in data.pairs}
    assert sides == {"train"}
    datasets = {p.subset.split("/")[0] for p in data.pairs}
    assert datasets == {"hh_rlhf", "hhh", "llmbar", "oasst"}  # MIT / Apache-2.0 sources only
    assert all(p.id and p.prompt[-1]["role"] == "user" and p.chosen.strip() and p.rejected.strip()
               for p in data.pairs)
