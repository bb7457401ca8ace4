"""Reward models on frozen embeddings (ArmoRM-style).

- `ridge.fit_ridge_heads`, `bradley_terry.fit_bt_head`: stage-1 linear heads per objective.
- `decorrelation.verbosity_transform`, `apply_transform`: the verbosity de-correlation matrix T.
- `gating.GatingNetwork`, `train_gating`: the stage-2 prompt-conditioned gating and scale.
- `reward_model.RewardModel`, `RewardOutput`: scoring, user weights, save / load.
- `export_hf.export_sequence_classifier`: fixed-weight export as a transformers sequence classifier.
- `hf_classifier.SequenceClassifierRM`: a plain transformers sequence classifier as a reward model.
- `loading.load_reward_model`: any reward-model reference (our folder, `default`, a classifier) loaded.

Submodules are imported on demand (nothing heavy is imported with the package).
"""
