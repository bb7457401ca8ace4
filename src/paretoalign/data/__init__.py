"""Data layer: preference pairs, absolute ratings and rankings in TRL's formats."""

from paretoalign.data.bundled import bundled_data_dir, default_sources_config, shared_data_config
from paretoalign.data.conversation import (
    EmptyFieldError,
    normalize_messages,
    normalize_prompt,
    normalize_response,
    split_implicit_prompt,
    turns_to_messages,
)
from paretoalign.data.hh import is_hh_text, parse_hh_dialogue
from paretoalign.data.preference import load_preference_pairs
from paretoalign.data.rankings import load_ranked_pairs, rankings_to_pairs
from paretoalign.data.ratings import load_ratings
from paretoalign.data.records import read_records
from paretoalign.data.schema import Message, PreferencePair, RatedResponse, prompt_text
from paretoalign.data.sources import (
    SourcesConfig,
    SourceSpec,
    TrainingData,
    load_sources_config,
    load_training_data,
    restrict_to_split,
)
from paretoalign.data.splits import heldout_split, prompt_key, split_of, split_pairs, split_ratings

__all__ = [
    "EmptyFieldError",
    "Message",
    "PreferencePair",
    "RatedResponse",
    "SourceSpec",
    "SourcesConfig",
    "TrainingData",
    "bundled_data_dir",
    "default_sources_config",
    "heldout_split",
    "is_hh_text",
    "load_preference_pairs",
    "load_ranked_pairs",
    "load_ratings",
    "load_sources_config",
    "load_training_data",
    "normalize_messages",
    "normalize_prompt",
    "normalize_response",
    "parse_hh_dialogue",
    "prompt_key",
    "prompt_text",
    "rankings_to_pairs",
    "read_records",
    "restrict_to_split",
    "shared_data_config",
    "split_implicit_prompt",
    "split_of",
    "split_pairs",
    "split_ratings",
    "turns_to_messages",
]
