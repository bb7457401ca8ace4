import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from paretoalign.cli import main
from paretoalign.errors import InputError
from paretoalign.train.merge import merge_policies
from paretoalign.train.policy_files import check_same_architecture, load_policy_state
from paretoalign.train.weight_ops import slerp, slerp_pair
from tests.tiny import make_tiny_llama, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed_copy(src, dst, seed, scale=0.02):
    """A copy of a saved model with Gaussian noise added to every floating-point tensor (a stand-in fine-tune)."""
    shutil.copytree(src, dst)
    g = torch.Generator().manual_seed(seed)
    state = load_file(str(src / "model.safetensors"))
    noisy = {k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in state.items()}
    save_file(noisy, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def llama_family(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("family")
    return tiny_llama_dir, *(perturbed_copy(tiny_llama_dir, root / f"ft{i}", seed=i) for i in range(3))


@pytest.fixture(scope="module")
def gpt2_family(tmp_path_factory, tiny_gpt2_dir):
    root = tmp_path_factory.mktemp("gpt2_family")
    return tiny_gpt2_dir, *(perturbed_copy(tiny_gpt2_dir, root / f"ft{i}", seed=10 + i) for i in range(2))


def state(path):
    return load_policy_state(path)[0]


def loaded_weights(path):
    model = AutoModelForCausalLM.from_pretrained(path)
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_slerp_output_loads_with_transformers_and_holds_the_merged_weights(llama_family, tmp_path):
    init, a, b, _ = llama_family
    out = merge_policies("slerp", init=str(init), models=[str(a), str(b)], output_dir=str(tmp_path / "m"), lam=0.3)
    expected = slerp_pair(state(init), state(a), state(b), 0.3)
    got = loaded_weights(out)
    assert set(got) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key
    assert not torch.equal(got["model.embed_tokens.weight"], state(a)["model.embed_tokens.weight"])
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in a.iterdir()] + ["merge_record.json"])
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == make_tokenizer().chat_template and len(tok) == len(make_tokenizer())


def test_merge_record_describes_the_slerp(llama_family, tmp_path):
    init, a, b, _ = llama_family
    out = merge_policies("slerp", init=str(init), models=[str(a), str(b)], output_dir=str(tmp_path / "m"))
    record = json.loads((out / "merge_record.json").read_text())
    assert record["operation"] == "slerp" and record["lam"] == 0.5
    assert record["init"] == str(init.resolve()) and record["models"] == [str(a.resolve()), str(b.resolve())]
    n_float = sum(t.is_floating_point() for t in state(init).values())
    assert record["summary"]["tensors"] == len(record["tensors"]) == n_float
    assert record["summary"]["max_coef_error"] < 1e-6
    # independent random perturbations are nearly orthogonal
    assert 80 < record["summary"]["mean_angle_deg"] < 100
    assert "paretoalign_version" in record


def test_three_model_slerp_folds_with_equal_lambdas(llama_family, tmp_path):
    init, a, b, c = llama_family
    out = merge_policies("slerp", init=str(init), models=[str(a), str(b), str(c)], output_dir=str(tmp_path / "m"))
    expected = slerp(state(init), [state(a), state(b), state(c)])
    got = state(out)
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    record = json.loads((out / "merge_record.json").read_text())
    assert record["lam"] == pytest.approx([1 / 2, 1 / 3])
    assert [(p["a"], p["b"]) for p in record["pairs"]] == [(0, 1), (0, 2), (1, 2)]


def test_liti_and_ema_files_follow_their_formulas(llama_family, tmp_path):
    init, a, b, _ = llama_family
    s_init, s_a, s_b = state(init), state(a), state(b)
    out = merge_policies("liti", init=str(init), models=[str(a)], output_dir=str(tmp_path / "liti"), eta=0.3)
    got = loaded_weights(out)
    for key in s_init:
        torch.testing.assert_close(got[key], 0.7 * s_init[key] + 0.3 * s_a[key])
    liti_record = json.loads((out / "merge_record.json").read_text())
    assert liti_record["eta"] == 0.3
    assert liti_record["summary"]["task_vector_norm_ratio"] == pytest.approx(0.3, rel=1e-5)

    out = merge_policies("ema", init=None, models=[str(a), str(b)], output_dir=str(tmp_path / "ema"), mu=0.25)
    got = loaded_weights(out)
    for key in s_a:
        torch.testing.assert_close(got[key], 0.75 * s_a[key] + 0.25 * s_b[key])
    ema_record = json.loads((out / "merge_record.json").read_text())
    assert ema_record["init"] is None and ema_record["mu"] == 0.25
    assert ema_record["summary"]["distance_ratio"] == pytest.approx(0.25, rel=1e-5)


def test_tied_embeddings_stay_tied(gpt2_family, tmp_path):
    init, a, b = gpt2_family
    out = merge_policies("slerp", init=str(init), models=[str(a), str(b)], output_dir=str(tmp_path / "m"))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(state(a))
    assert "lm_head.weight" not in state(a)
    model = AutoModelForCausalLM.from_pretrained(out)
    expected = slerp_pair(state(init), state(a), state(b), 0.5)["transformer.wte.weight"]
    assert torch.equal(model.lm_head.weight, expected)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_sharded_input_is_read_and_written_as_one_file(llama_family, tmp_path):
    init, a, b, _ = llama_family
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(a).save_pretrained(sharded, max_shard_size="100KB")
    make_tokenizer().save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").is_file()
    s_sharded, s_a = state(sharded), state(a)
    assert set(s_sharded) == set(s_a) and all(torch.equal(s_sharded[k], v) for k, v in s_a.items())
    out = merge_policies("slerp", init=str(init), models=[str(sharded), str(b)], output_dir=str(tmp_path / "m"))
    assert sorted(p.name for p in out.glob("*.safetensors*")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    expected = slerp_pair(state(init), s_a, state(b), 0.5)
    assert all(torch.equal(loaded_weights(out)[k], v) for k, v in expected.items())


def test_different_architectures_are_refused_naming_both(llama_family, tiny_gpt2_dir, tmp_path):
    init, a, _, _ = llama_family
    with pytest.raises(InputError, match="model_type") as err:
        check_same_architecture([init, tiny_gpt2_dir])
    assert str(init) in str(err.value) and str(tiny_gpt2_dir) in str(err.value)

    tok = make_tokenizer()
    small = make_tiny_llama(tok)
    narrow = LlamaForCausalLM(LlamaConfig(**{**small.config.to_dict(), "hidden_size": 32, "head_dim": 8}))
    narrow.save_pretrained(tmp_path / "narrow")
    with pytest.raises(InputError, match="hidden_size") as err:
        merge_policies("slerp", init=str(init), models=[str(a), str(tmp_path / "narrow")],
                       output_dir=str(tmp_path / "m"))
    assert str(init) in str(err.value) and str(tmp_path / "narrow") in str(err.value)
    assert not (tmp_path / "m").exists()


def test_pickled_or_missing_weights_are_refused(tiny_llama_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(InputError, match="pickled weights are refused") as err:
        load_policy_state(pickled)
    assert str(pickled) in str(err.value)
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="no model.safetensors"):
        load_policy_state(pickled)
    with pytest.raises(InputError, match="not a directory"):
        load_policy_state(tmp_path / "absent")


@pytest.mark.parametrize(("op", "n_models", "with_init", "values", "message"), [
    ("slerp", 1, True, {}, "at least 2 models"),
    ("slerp", 2, False, {}, "needs --init"),
    ("slerp", 3, True, {"lam": 0.5}, "2 models only"),
    ("slerp", 2, True, {"lam": 1.5}, r"--lam must be in \[0, 1\]"),
    ("slerp", 2, True, {"eta": 0.5}, "--eta does not apply to slerp"),
    ("liti", 2, True, {"eta": 0.3}, "exactly one model"),
    ("liti", 1, True, {}, "liti needs --eta"),
    ("liti", 1, True, {"eta": float("nan")}, "--eta must be in"),
    ("ema", 2, True, {"mu": 0.1}, "--init does not apply to ema"),
    ("ema", 3, False, {"mu": 0.1}, "exactly two models"),
    ("ema", 2, False, {"mu": 0.0}, r"--mu must be in \(0, 1\]"),
    ("average", 2, True, {}, "unknown operation"),
])
def test_bad_arguments_are_refused_before_anything_is_written(llama_family, tmp_path, op, n_models, with_init,
                                                              values, message):
    init, *models = llama_family
    with pytest.raises(InputError, match=message):
        merge_policies(op, init=str(init) if with_init else None, models=[str(m) for m in models[:n_models]],
                       output_dir=str(tmp_path / "m"), **values)
    assert not (tmp_path / "m").exists()


def test_output_may_not_overwrite_an_input(llama_family):
    init, a, b, _ = llama_family
    with pytest.raises(InputError, match="one of the inputs"):
        merge_policies("slerp", init=str(init), models=[str(a), str(b)], output_dir=str(b))
    assert (b / "model.safetensors").is_file()


def test_cli_merge_writes_the_output_and_prints_a_summary(llama_family, tmp_path, capsys):
    init, a, b, _ = llama_family
    out = tmp_path / "m"
    assert main(["merge", "slerp", "--init", str(init), "--models", str(a), str(b), "--lam", "0.5",
                 "--output-dir", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"merge slerp: 2 model(s) -> {out}") and "mean task-vector angle" in line
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_cli_merge_reports_bad_counts_with_exit_code_2(llama_family, tmp_path, capsys):
    init, a, b, _ = llama_family
    out = tmp_path / "m"
    assert main(["merge", "liti", "--init", str(init), "--models", str(a), str(b), "--eta", "0.3",
                 "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "exactly one model" in err
    assert not out.exists()


def test_merge_reads_a_training_run_directory_through_its_policy_folder(tmp_path, tiny_llama_dir):
    from paretoalign.train.merge import policy_source

    run = tmp_path / "run"
    (run / "policy").mkdir(parents=True)
    (run / "policy" / "config.json").write_text("{}")
    assert policy_source(str(run)) == str(run / "policy")
    assert policy_source(str(tiny_llama_dir)) == str(tiny_llama_dir)
    assert policy_source(str(tmp_path / "missing")) == str(tmp_path / "missing")
