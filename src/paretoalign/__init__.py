"""paretoalign: multi-objective alignment of language models."""

from paretoalign.threads import configure_threads

__version__ = "0.1.0"
__all__ = ["__version__", "configure_threads"]
