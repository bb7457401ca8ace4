"""Fakes for the server tests: a hashing-backbone reward model behind a MicroBatcher, and app clients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.rewards.fake_backbone import HashingBackbone
from tests.rewards.model_factory import random_model


def make_rm():
    """A 4-objective RewardModel (helpfulness, harmlessness, honesty, verbosity) on the hashing backbone."""
    backbone = HashingBackbone()
    return random_model(d=backbone.feature_dim, dp=backbone.prompt_feature_dim, backbone=backbone)


@pytest.fixture()
def rm():
    return make_rm()


@contextlib.contextmanager
def app_client(rm: Any, config: Any = None, *, raise_server_exceptions: bool = True, row_scorer: Any = None,
               **kwargs: Any) -> Iterator[TestClient]:
    """A TestClient of `create_app` over a MicroBatcher of `rm` (lifespan started and stopped around the block)."""
    from paretoalign.server.app import create_app
    from paretoalign.server.batcher import MicroBatcher
    from paretoalign.server.config import ServeConfig

    config = config or ServeConfig(model="test-rm")
    scorer = row_scorer if row_scorer is not None else MicroBatcher(rm, max_wait_ms=1.0)
    app = create_app(scorer, config, **kwargs)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


@pytest.fixture()
def client(rm) -> Iterator[TestClient]:
    with app_client(rm) as c:
        yield c
