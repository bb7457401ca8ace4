"""Inference-time alignment: sampling engine, Best-of-N, Speculative Rejection, InfAlign calibration, GenARM."""

from paretoalign.inference.best_of_n import best_of_n
from paretoalign.inference.calibration import (
    CalibrationTable,
    bon_transform,
    calibrate_prompts,
    calibrated_reward,
    exponential_transform,
    won_transform,
)
from paretoalign.inference.engine import Candidate, CandidateGenerator, generate_candidates
from paretoalign.inference.guided_decoding import reward_guided_generate
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.selection import SelectionResult
from paretoalign.inference.speculative import speculative_rejection
from paretoalign.inference.statistics import bon_kl_bound, bon_win_rate, empirical_win_rate, monte_carlo_kl

__all__ = [
    "Candidate", "CandidateGenerator", "CalibrationTable", "Policy", "SamplingParams", "SelectionResult",
    "best_of_n", "bon_kl_bound", "bon_transform", "bon_win_rate", "calibrate_prompts", "calibrated_reward",
    "empirical_win_rate", "exponential_transform", "generate_candidates", "monte_carlo_kl", "reward_guided_generate",
    "speculative_rejection", "won_transform",
]
