"""The streamed WARP merge (`stream_slerp_liti_`): the in-memory SLERP then LITI, one tensor at a time."""

import copy
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from paretoalign.errors import InputError
from paretoalign.train import weight_ops
from paretoalign.train.weight_ops import (
    SafetensorsReader,
    SafetensorsWriter,
    liti,
    merge_report,
    slerp,
    stream_slerp_liti_,
    tied_groups,
)
from tests.tiny import make_tiny_gpt2, make_tiny_llama, make_tokenizer

TOKENIZER = make_tokenizer()


def tiny(arch):
    return (make_tiny_llama if arch == "llama" else make_tiny_gpt2)(TOKENIZER)


def perturbed(model, seed, scale=0.05, skip=("norm", "ln_")):
    """A copy of `model` with every weight but the norms moved by a seeded random step (norms stay: zero task
    vectors, the linear fallback)."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if not any(s in name for s in skip):
                p.add_(scale * torch.randn(p.shape, generator=g))
    return out


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_runs(models, tmp_path):
    dirs = []
    for i, m in enumerate(models):
        m.save_pretrained(tmp_path / f"run{i}")
        dirs.append(tmp_path / f"run{i}")
    return [SafetensorsReader.policy(d, name=f"run {i}") for i, d in enumerate(dirs)]


def assert_equal_states(actual, expected):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize(("arch", "count", "lam"), [("llama", 2, 0.3), ("gpt2", 2, None), ("llama", 3, None)])
def test_streamed_merge_equals_the_in_memory_slerp_then_liti(tmp_path, arch, count, lam):
    init_model = tiny(arch)
    runs = [perturbed(init_model, seed) for seed in range(1, count + 1)]
    init, states = state_of(init_model), [state_of(r) for r in runs]
    expected_slerp = slerp(init, states, lam)
    readers = save_runs(runs, tmp_path)
    live = copy.deepcopy(init_model)
    params_before = {n: (p, p.data_ptr()) for n, p in live.named_parameters()}
    outputs = {None: tmp_path / "slerp.safetensors", 0.25: tmp_path / "eta.safetensors"}
    report = stream_slerp_liti_(live, readers, 0.5, lam=lam, outputs=outputs)

    assert_equal_states(state_of(live), liti(init, expected_slerp, 0.5))
    for name, p in live.named_parameters():  # written in place: the same parameters, the same memory
        assert params_before[name] == (p, p.data_ptr())
    stored = set(readers[0].keys())  # tied weights once, as the run's own file stores them
    assert_equal_states(load_file(str(outputs[None])), {k: v for k, v in expected_slerp.items() if k in stored})
    eta = liti(init, expected_slerp, 0.25)
    assert_equal_states(load_file(str(outputs[0.25])), {k: v for k, v in eta.items() if k in stored})
    assert report == merge_report(init, states[0], states[1])
    if arch == "gpt2":
        assert "lm_head.weight" in init and "lm_head.weight" not in stored


def test_streamed_outputs_load_with_from_pretrained_and_tied_weights_stay_tied(tmp_path):
    init_model = tiny("gpt2")
    runs = [perturbed(init_model, seed) for seed in (1, 2)]
    expected = slerp(state_of(init_model), [state_of(r) for r in runs])
    (tmp_path / "out").mkdir()
    init_model.save_pretrained(tmp_path / "out", state_dict={})  # config.json only, as the trainer writes it
    stream_slerp_liti_(copy.deepcopy(init_model), save_runs(runs, tmp_path), 1.0,
                       outputs={None: tmp_path / "out" / "model.safetensors"})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    assert_equal_states(state_of(loaded), expected)


class CountingReader(SafetensorsReader):
    """A reader that records, at each read, how many tensors it or its siblings returned are still alive."""

    def __init__(self, files, alive, log, **kwargs):
        super().__init__(files, **kwargs)
        self.alive, self.log = alive, log

    def get(self, key):
        still = [r for r in self.alive if r() is not None]
        self.log.append((key, len(still), sum(r().numel() * r().element_size() for r in still)))
        tensor = super().get(key)
        self.alive.append(weakref.ref(tensor))
        return tensor


def test_the_streamed_merge_never_holds_two_read_tensors_or_a_second_state(tmp_path):
    init_model = tiny("llama")
    runs = [perturbed(init_model, seed) for seed in (1, 2, 3)]
    alive, log = [], []
    readers = [CountingReader(r.files, alive, log, name=r.name) for r in save_runs(runs, tmp_path)]
    live = copy.deepcopy(init_model)
    stream_slerp_liti_(live, readers, 0.5, outputs={None: tmp_path / "slerp.safetensors"})
    groups = tied_groups(live.state_dict())
    assert len(log) == 3 * len(groups)  # every tensor of every run read exactly once
    assert sorted(key for key, _, _ in log) == sorted(k for keys, _ in groups for k in keys[:1] for _ in range(3))
    assert max(count for _, count, _ in log) == 0  # the previous read is gone before the next one starts
    assert all(r() is None for r in alive)


def test_a_partial_run_counts_its_missing_tensors_as_unchanged(tmp_path):
    init_model = tiny("llama")
    runs = [perturbed(init_model, seed, skip=("norm", "mlp", "embed", "lm_head")) for seed in (1, 2)]
    full = copy.deepcopy(init_model)
    stream_slerp_liti_(full, save_runs(runs, tmp_path), 0.5)
    partial = []
    for i, run in enumerate(runs):
        changed = {n: p.detach() for n, p in run.named_parameters() if "self_attn" in n}
        save_file(changed, str(tmp_path / f"part{i}.safetensors"))
        partial.append(SafetensorsReader([tmp_path / f"part{i}.safetensors"], partial=True, name=f"part {i}"))
    live = copy.deepcopy(init_model)
    stream_slerp_liti_(live, partial, 0.5)
    assert_equal_states(state_of(live), state_of(full))
    with pytest.raises(InputError, match="lacks tensor 'model.embed_tokens.weight'"):
        stream_slerp_liti_(live, [SafetensorsReader(p.files, name="p") for p in partial], 0.5)


def test_bad_runs_are_refused_before_anything_is_written(tmp_path):
    init_model = tiny("llama")
    readers = save_runs([perturbed(init_model, 1), perturbed(init_model, 2)], tmp_path)
    live = copy.deepcopy(init_model)
    before = state_of(live)
    wrong = state_of(perturbed(init_model, 3))
    wrong["model.norm.weight"] = torch.ones(7)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    extra = {**state_of(init_model), "extra.weight": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    cases = [([readers[0], SafetensorsReader([tmp_path / "wrong.safetensors"], name="bad")],
              r"'model.norm.weight' has shape \(7,\) in model 'bad'"),
             ([readers[0], SafetensorsReader([tmp_path / "extra.safetensors"], name="big")],
              "model 'big' has tensor 'extra.weight'"),
             (readers[:1], "at least 2 models")]
    for runs, message in cases:
        with pytest.raises(InputError, match=message):
            stream_slerp_liti_(live, runs, 0.5, outputs={None: tmp_path / "never.safetensors"})
    with pytest.raises(InputError, match="eta"):
        stream_slerp_liti_(live, readers, 1.5)
    with pytest.raises(InputError, match="2 models only"):
        stream_slerp_liti_(live, readers + readers[:1], 0.5, lam=0.5)
    assert_equal_states(state_of(live), before)
    assert not (tmp_path / "never.safetensors").exists()


def test_non_float_tensors_are_copied_and_must_match(tmp_path):
    w = torch.tensor([0.5, -1.0])
    init = {"w": w.clone(), "pos": torch.arange(3)}
    for i, (dw, pos) in enumerate([([1.0, 0.0], torch.arange(3)), ([0.0, 1.0], torch.arange(3)),
                                   ([0.0, 1.0], torch.arange(3) + 1)]):
        save_file({"w": w + torch.tensor(dw), "pos": pos}, str(tmp_path / f"m{i}.safetensors"))
    reader = [SafetensorsReader([tmp_path / f"m{i}.safetensors"], name=f"m{i}") for i in range(3)]
    live = {k: v.clone() for k, v in init.items()}
    stream_slerp_liti_(live, reader[:2], 1.0, outputs={None: tmp_path / "out.safetensors"})
    expected = slerp(init, [load_file(str(tmp_path / f"m{i}.safetensors")) for i in range(2)])
    assert_equal_states(live, expected)
    assert_equal_states(load_file(str(tmp_path / "out.safetensors")), expected)
    with pytest.raises(InputError, match="'pos' differs between model 'm2'"):
        stream_slerp_liti_({k: v.clone() for k, v in init.items()}, [reader[0], reader[2]], 0.5)


def test_overlapping_tensors_cannot_be_merged_in_place():
    flat = torch.zeros(10)
    with pytest.raises(InputError, match="overlap in memory"):
        tied_groups({"a": flat[:6], "b": flat[4:]})
    shared = torch.zeros(4)
    assert [keys for keys, _ in tied_groups({"a": shared, "b": torch.zeros(2), "a2": shared})] == [["a", "a2"], ["b"]]


def test_the_writer_streams_any_dtype_in_any_order_and_checks_completeness(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).to(torch.bfloat16), "f16": torch.randn(2, 2).half(),
               "i64": torch.arange(6).view(2, 3), "mask": torch.tensor([True, False, True]),
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "t": torch.randn(4, 3).t()}
    layout = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    with SafetensorsWriter(tmp_path / "all.safetensors", layout, {"format": "pt"}) as writer:
        for key in reversed(list(tensors)):
            writer.write(key, tensors[key])
    assert_equal_states(load_file(str(tmp_path / "all.safetensors")), tensors)
    header = int.from_bytes((tmp_path / "all.safetensors").read_bytes()[:8], "little")
    assert header % 8 == 0  # the data starts 8-byte aligned
    writer = SafetensorsWriter(tmp_path / "short.safetensors", layout)
    writer.write("f32", tensors["f32"])
    with pytest.raises(ValueError, match="never written"):
        writer.close()
    with pytest.raises(ValueError, match="laid out as"):
        SafetensorsWriter(tmp_path / "x.safetensors", layout).write("f32", torch.zeros(4, 3))


def test_chunked_arithmetic_keeps_the_results_of_whole_tensor_arithmetic(tmp_path, monkeypatch):
    init_model = tiny("llama")
    runs = [perturbed(init_model, seed) for seed in (1, 2)]
    init, states = state_of(init_model), [state_of(r) for r in runs]
    whole_slerp, whole_liti = slerp(init, states, 0.3), liti(init, states[0], 0.7)
    whole_report = merge_report(init, states[0], states[1])
    monkeypatch.setattr(weight_ops, "CHUNK", 37)  # every weight of the tiny model spans many chunks
    for key, value in slerp(init, states, 0.3).items():
        torch.testing.assert_close(value, whole_slerp[key], atol=1e-6, rtol=0)
    assert_equal_states(liti(init, states[0], 0.7), whole_liti)  # element-wise: chunking changes nothing
    for row, whole in zip(merge_report(init, states[0], states[1])["tensors"], whole_report["tensors"], strict=True):
        for field in ("angle_deg", "norm_a", "norm_b"):  # angle None: a zero task vector (the norms)
            assert row[field] == (None if whole[field] is None else pytest.approx(whole[field], rel=1e-12))
    live = copy.deepcopy(init_model)
    stream_slerp_liti_(live, save_runs(runs, tmp_path), 0.5, lam=0.3)
    assert_equal_states(state_of(live), liti(init, slerp(init, states, 0.3), 0.5))
