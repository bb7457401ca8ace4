"""The `serve` command: the reward model (and optionally a policy) as an HTTP server (`paretoalign.server`)."""

from __future__ import annotations

import argparse

from paretoalign.cli.args import check_input_file, check_model_ref


def serve_config(args: argparse.Namespace):
    """The ServeConfig of the parsed flags (InputError naming the flag for a bad value)."""
    from paretoalign.server.config import ServeConfig, config_fields

    values = {name: getattr(args, name) for name in config_fields() if hasattr(args, name)}
    values["cors_origins"] = tuple(args.cors_origin or ())
    return ServeConfig(**values)


def cmd_serve(args: argparse.Namespace) -> int:
    """Check the flags and the model references, then serve until SIGTERM / Ctrl-C (see `server.runner`)."""
    from paretoalign.server.runner import serve

    config = serve_config(args)
    check_input_file(config.api_key_file, "--api-key-file")
    check_model_ref(config.policy, "--policy")
    check_model_ref(config.query_template, "--query-template")
    serve(config)
    return 0
