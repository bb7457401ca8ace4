"""Never run a stranger's code: model folders that ask to import their own Python are refused unless the USER opts in.

Each malicious folder carries a Python file that writes a marker file when imported; every refusal test checks that
the command exits 2 with the opt-in hint and that the marker never appears. One test opts in on the command line and
sees the marker appear (in a subprocess, so the imported classes stay out of this test session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paretoalign.cli import main
from paretoalign.embed.models import check_remote_code, load_causal_lm, remote_code_requests
from paretoalign.errors import InputError
from paretoalign.rewards.gating import GatingNetwork
from paretoalign.rewards.reward_model import RewardModel
from tests.tiny import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

HINT = "--trust-remote-code"
PAYLOAD = '''import pathlib

pathlib.Path({marker!r}).write_text("remote code ran\\n")
'''
EVIL_MODELING = PAYLOAD + '''
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel


class EvilConfig(LlamaConfig):
    pass


class EvilModel(LlamaModel):
    config_class = EvilConfig


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig


class EvilForSequenceClassification(LlamaForSequenceClassification):
    config_class = EvilConfig
'''
AUTO_MAP = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
            "AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification"}
PAIRS = [{"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast, then bake.", "rejected": "no"},
         {"prompt": "hello there", "chosen": "Hello! How can I help?", "rejected": "sorry"}]


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def make_evil_model(directory: Path, marker: Path) -> Path:
    """A tiny Llama folder whose config.json auto_map points at modeling_evil.py (which writes `marker`)."""
    save_tiny_model(directory, "llama")
    (directory / "modeling_evil.py").write_text(EVIL_MODELING.format(marker=str(marker)), encoding="utf-8")
    _edit_json(directory / "config.json", auto_map=AUTO_MAP)
    return directory


def make_reward_model(directory: Path, backbone_dir: Path, *, stored_trust: bool = True) -> Path:
    """A saved paretoalign RM on a causal-LM backbone (hidden size 64) whose config.json may ask for remote code."""
    spec = {"kind": "causal_lm", "model": str(backbone_dir), "gguf_file": None, "max_length": 64, "dtype": "float32"}
    if stored_trust:
        spec["trust_remote_code"] = True
    rng = np.random.default_rng(0)
    model = RewardModel(objective_names=["helpfulness", "verbosity"],
                        objective_kinds={"helpfulness": "bradley_terry", "verbosity": "length"},
                        W=rng.normal(size=(2, 64)).astype(np.float32), T=np.eye(2, dtype=np.float32),
                        gating=GatingNetwork(64, 2, hidden=(4,)), baseline_w=np.zeros(64, np.float32),
                        backbone_spec=spec)
    model.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Malicious folders (all writing to one marker), a clean tiny model, RMs on both, and input files."""
    root = tmp_path_factory.mktemp("trust")
    marker = root / "PWNED"
    w = {"root": root, "marker": marker}
    w["evil"] = make_evil_model(root / "evil_model", marker)
    w["clean"] = save_tiny_model(root / "clean_model", "llama")
    tok = save_tiny_model(root / "evil_tokenizer", "llama")
    (tok / "tokenization_evil.py").write_text(PAYLOAD.format(marker=str(marker)), encoding="utf-8")
    _edit_json(tok / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})
    w["evil_tokenizer"] = tok
    st = root / "evil_st"  # a sentence-transformers folder naming a custom module class
    st.mkdir()
    (st / "custom_st.py").write_text(PAYLOAD.format(marker=str(marker)), encoding="utf-8")
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "custom_st.Evil"}]))
    w["evil_st"] = st
    adapter = root / "evil_adapter"  # a PEFT adapter whose base model is the evil folder
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                            "base_model_name_or_path": str(w["evil"])}))
    w["evil_adapter"] = adapter
    w["evil_rm"] = make_reward_model(root / "evil_rm", w["evil"])
    w["clean_rm"] = make_reward_model(root / "clean_rm", w["clean"])
    w["rows"] = write_jsonl(root / "rows.jsonl", [{"prompt": "hi", "response": "hello"}])
    w["pairs"] = write_jsonl(root / "pairs.jsonl", PAIRS)
    w["prompts"] = write_jsonl(root / "prompts.jsonl", [{"prompt": "hi"}])
    yield w
    assert not marker.exists(), "a malicious model folder's code ran"


def assert_refused(rc: int, capsys, directory: Path, marker: Path) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error:") and "Traceback" not in err
    assert str(directory) in err and HINT in err and "trust_remote_code=True" in err
    assert not marker.exists()
    return err


# ---------------------------------------------------------------- the one check

def test_the_check_finds_every_way_a_folder_asks_for_code(world):
    assert remote_code_requests(world["clean"]) == []
    assert remote_code_requests(world["root"] / "no-such-dir") == []  # a hub id: transformers refuses on its own
    for name in ("evil", "evil_tokenizer", "evil_st", "evil_adapter"):
        assert remote_code_requests(world[name]), name
        with pytest.raises(InputError, match=HINT):
            check_remote_code(world[name])
        check_remote_code(world[name], trust_remote_code=True)  # the user's own opt-in passes (nothing imported)
    assert "tokenizer_config.json" in remote_code_requests(world["evil_tokenizer"])[0]
    assert "custom_st.Evil" in remote_code_requests(world["evil_st"])[0]
    with pytest.raises(InputError):
        check_remote_code(world["evil"], trust_remote_code="yes")  # only a real True opts in
    assert not world["marker"].exists()


def test_a_sentence_transformers_module_folder_with_an_auto_map_is_found(tmp_path, world):
    st = tmp_path / "st"
    sub = st / "0_Transformer"
    sub.mkdir(parents=True)
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer",
                                                  "type": "sentence_transformers.models.Transformer"}]))
    (sub / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "m.M"}}))
    assert any("0_Transformer" in r for r in remote_code_requests(st))


def test_a_custom_generate_function_counts_as_code(tmp_path):
    (tmp_path / "custom_generate").mkdir()
    (tmp_path / "custom_generate" / "generate.py").write_text("def generate(model, **kw): ...\n")
    assert "custom_generate" in remote_code_requests(tmp_path)[0]
    with pytest.raises(InputError, match=HINT):
        check_remote_code(tmp_path)


def test_loaders_refuse_without_the_users_flag(world):
    from paretoalign.embed.causal_lm import CausalLMBackbone
    from paretoalign.embed.registry import load_backbone
    from paretoalign.embed.sentence_encoder import SentenceEncoderBackbone
    from paretoalign.inference.policy import Policy

    for load in (lambda: load_causal_lm(str(world["evil"])),
                 lambda: load_causal_lm(str(world["evil_tokenizer"])),
                 lambda: load_causal_lm(str(world["evil_adapter"])),
                 lambda: Policy.from_pretrained(world["evil"]),
                 lambda: CausalLMBackbone(str(world["evil"])),
                 lambda: SentenceEncoderBackbone(str(world["evil_st"])),
                 # a stored spec's trust_remote_code is ignored
                 lambda: load_backbone({"kind": "causal_lm", "model": str(world["evil"]), "trust_remote_code": True}),
                 lambda: RewardModel.from_pretrained(world["evil_rm"])):
        with pytest.raises(InputError, match=HINT):
            load()
    assert not world["marker"].exists()


def test_a_stored_trust_remote_code_is_never_honoured_nor_saved(world, tmp_path):
    from paretoalign.embed.causal_lm import CausalLMBackbone

    model = RewardModel.from_pretrained(world["clean_rm"])  # its config.json says trust_remote_code: true
    assert model.trust_remote_code is False and "trust_remote_code" not in model.backbone_spec
    assert model.backbone.trust_remote_code is False
    assert "trust_remote_code" not in CausalLMBackbone(str(world["clean"]), trust_remote_code=True).spec()
    model.save_pretrained(tmp_path / "resaved")
    saved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert "trust_remote_code" not in saved["backbone"]


# ---------------------------------------------------------------- every command

@pytest.mark.parametrize("command", ["score", "eval-rm", "export-hf"])
def test_rm_commands_refuse_an_rm_whose_backbone_asks_for_code(world, command, capsys, tmp_path):
    out = tmp_path / "out"
    extra = {"score": ["--input", str(world["rows"]), "--output", str(out)],
             "eval-rm": ["--data", str(world["pairs"]), "--output", str(out)],
             "export-hf": ["--weights", "helpfulness=1", "--output-dir", str(out)]}[command]
    rc = main([command, "--model", str(world["evil_rm"]), *extra])
    err = assert_refused(rc, capsys, world["evil"], world["marker"])
    assert str(world["evil_rm"]) in err  # says which RM named the folder
    assert not out.exists()


@pytest.mark.parametrize("command", ["bon", "calibrate"])
@pytest.mark.parametrize("bad", ["rm", "policy", "tokenizer"])
def test_sampling_commands_refuse_policies_and_rms_that_ask_for_code(world, command, bad, capsys, tmp_path):
    rm = world["evil_rm"] if bad == "rm" else world["clean_rm"]
    policy = {"rm": world["clean"], "policy": world["evil"], "tokenizer": world["evil_tokenizer"]}[bad]
    out = tmp_path / "out.jsonl"
    rc = main([command, "--policy", str(policy), "--rm", str(rm), "--prompts", str(world["prompts"]),
               "--max-new-tokens", "2", "--output", str(out), "--quiet"])
    assert_refused(rc, capsys, world["evil"] if bad == "rm" else policy, world["marker"])
    assert not out.exists()


def test_bon_refuses_a_reference_policy_that_asks_for_code(world, capsys, tmp_path):
    rc = main(["bon", "--policy", str(world["clean"]), "--rm", str(world["clean_rm"]), "--prompts",
               str(world["prompts"]), "--reference", str(world["evil"]), "--n", "2", "--max-new-tokens", "2",
               "--output", str(tmp_path / "out.jsonl"), "--quiet"])
    assert_refused(rc, capsys, world["evil"], world["marker"])


@pytest.mark.parametrize("bad", ["run", "reward_model"])
def test_front_refuses(world, bad, capsys, tmp_path):
    run = world["evil"] if bad == "run" else world["clean"]
    rm = world["evil_rm"] if bad == "reward_model" else world["clean_rm"]
    rc = main(["front", "--runs", str(run), "--reference", str(world["clean"]), "--reward-model", str(rm),
               "--prompts", str(world["prompts"]), "--bon", "", "--samples-per-prompt", "1", "--max-new-tokens", "2",
               "--output", str(tmp_path / "report")])
    assert_refused(rc, capsys, world["evil"], world["marker"])


def test_guided_refuses_a_reward_lm_that_asks_for_code(world, capsys, tmp_path):
    rc = main(["guided", "--policy", str(world["clean"]), "--reward-lm", f"{world['evil']}=0.5", "--prompts",
               str(world["prompts"]), "--max-new-tokens", "2", "--output", str(tmp_path / "out.jsonl")])
    assert_refused(rc, capsys, world["evil"], world["marker"])


TRAIN = ["max_steps=1", "batch_size=2", "progress=false", "lora_r=4", "max_length=64"]


@pytest.mark.parametrize("case", ["dpo-model", "dpo-reference", "modpo-margin-policy", "bond-reward-model",
                                  "warp-reward-model", "train-genarm", "train-rm", "train-rm-sentence-encoder"])
def test_trainers_refuse_models_that_ask_for_code(world, case, capsys, tmp_path):
    out = tmp_path / "run"
    evil, clean = str(world["evil"]), str(world["clean"])
    data = f"data={world['pairs']}"
    argv = {
        "dpo-model": ["dpo", "--output-dir", str(out), data, f"model={evil}", *TRAIN],
        "dpo-reference": ["dpo", "--output-dir", str(out), data, f"model={clean}", f"reference={evil}", *TRAIN],
        "modpo-margin-policy": ["modpo", "--output-dir", str(out), data, f"model={clean}", "objective=null",
                                "margin_source=implicit", f"margin_policies=[{evil}]", "weights=[0.6, 0.4]", *TRAIN],
        "bond-reward-model": ["bond", "--output-dir", str(out), f"model={clean}",
                              f"reward_model={world['evil_rm']}", f"prompts={world['prompts']}", *TRAIN],
        "warp-reward-model": ["warp", "--output-dir", str(out), f"model={clean}",
                              f"reward_model={world['evil_rm']}", f"prompts={world['prompts']}", *TRAIN],
        "train-genarm": ["train-genarm", "--pairs", str(world["pairs"]), "--output-dir", str(out), f"model={evil}",
                         "max_steps=1", "progress=false"],
        "train-rm": ["train-rm", "--output-dir", str(out), f"backbone={evil}", "backbone_kind=causal_lm",
                     "progress=false"],
        "train-rm-sentence-encoder": ["train-rm", "--output-dir", str(out), f"backbone={world['evil_st']}",
                                      "progress=false"],
    }[case]
    rc = main(argv)
    directory = world["evil_st"] if case == "train-rm-sentence-encoder" else world["evil"]
    assert_refused(rc, capsys, directory, world["marker"])
    assert not (out / "policy").exists()


# ---------------------------------------------------------------- the user's own opt-in

def test_the_users_flag_lets_the_remote_code_run(tmp_path):
    """--trust-remote-code on the command line is the one way in: the payload runs (so the refusals above are real)."""
    marker = tmp_path / "PWNED"
    evil = make_evil_model(tmp_path / "evil_model", marker)
    rm = make_reward_model(tmp_path / "rm", evil, stored_trust=False)
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "hi", "response": "hello"}])
    out = tmp_path / "scored.jsonl"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    argv = ["score", "--model", str(rm), "--input", str(rows), "--output", str(out), "--quiet"]
    code = "import sys; from paretoalign.cli import main; sys.exit(main(sys.argv[1:]))"
    refused = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and HINT in refused.stderr and not marker.exists()
    allowed = subprocess.run([sys.executable, "-c", code, *argv, "--trust-remote-code"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert marker.exists(), allowed.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert len(out.read_text().splitlines()) == 1
