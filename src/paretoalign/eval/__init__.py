"""RewardBench-style evaluation: pairwise accuracy with bootstrap intervals, per dataset and subset."""

from paretoalign.eval.pairwise import accuracy, bootstrap_ci, length_scores, pairwise_outcomes
from paretoalign.eval.rm_eval import (
    GroupResult,
    MetricResult,
    RMEvalReport,
    dataset_of,
    evaluate_pairs,
    evaluate_score_pairs,
    pair_groups,
    reward_model_scores,
)

__all__ = [
    "GroupResult",
    "MetricResult",
    "RMEvalReport",
    "accuracy",
    "bootstrap_ci",
    "dataset_of",
    "evaluate_pairs",
    "evaluate_score_pairs",
    "length_scores",
    "pair_groups",
    "pairwise_outcomes",
    "reward_model_scores",
]
