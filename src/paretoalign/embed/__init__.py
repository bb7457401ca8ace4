"""Embedding backbones: frozen features h(x, y) and h(x) for the reward heads."""
