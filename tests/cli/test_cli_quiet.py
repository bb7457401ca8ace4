"""A tiny DPO run through the CLI: no FutureWarning and no transformers "Writing model shards" bar."""

import warnings

import pytest

from paretoalign.cli import main
from tests.cli.conftest import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [{"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast, then bake.", "rejected": "no"},
         {"prompt": "hello there", "chosen": "Hello! How can I help?", "rejected": "sorry"}]


@pytest.mark.parametrize("progress", ["true", "false"])
def test_dpo_warns_nothing_and_shows_no_shard_bar(tmp_path, tiny_llama_dir, capsys, progress):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["dpo", "--output-dir", str(tmp_path / "run"), f"data={pairs}", f"model={tiny_llama_dir}",
                   "max_steps=1", "batch_size=2", "lora_r=4", "max_length=64", f"progress={progress}"])
    assert rc == 0
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
    err = capsys.readouterr().err
    assert "Writing model shards" not in err and "policy saved to" in err
    assert ("dpo:" in err.split("policy saved to")[0]) if progress == "true" else "step/s" not in err
