"""Data layer: preference pairs, absolute ratings and rankings in TRL's formats."""
