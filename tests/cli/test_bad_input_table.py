"""Bad input across every command, as a table: each case must fail with one short line naming the file, line or
field at fault, the right exit status, no traceback, and no file left behind or changed.

Each row: an id, the argv (``{t}``: the case's own folder, also the working directory; ``{llama}``: a tiny Llama;
``{rm}``: a reward model trained on it), the files to create in ``{t}`` first, the exit status, the substrings the
message must contain, and whether the command must fail before any model loads or any data is embedded (most:
settings and paths are checked first).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from paretoalign.cli import main
from tests.cli.conftest import forbid_calls, toy_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

DIR = object()
"""An empty folder."""
CORRUPT_POLICY = object()
"""A copy of the tiny Llama whose model.safetensors is garbage."""
CUT_POLICY = object()
"""A copy of the tiny Llama whose model.safetensors is cut in half (an interrupted download)."""
CORRUPT_RM = object()
"""A copy of the reward model whose model.safetensors is garbage."""
POLICY = object()
"""A plain copy of the tiny Llama."""
REMOTE_CODE_POLICY = object()
"""A copy of the tiny Llama whose config.json has an auto_map naming its own evil.py, which writes PWNED when run."""
REMOTE_CODE_RM = object()
"""A copy of the reward model whose backbone is the REMOTE_CODE_POLICY folder 'evil' beside it, with
trust_remote_code: true stored in its config (which must never count)."""

PAIRS = "".join(json.dumps(r) + "\n" for r in toy_pairs(12))
ONE_PAIR = "".join(json.dumps(r) + "\n" for r in toy_pairs(1))
PROMPTS = '{"id": "p1", "prompt": "How do I bake bread?"}\n{"id": "p2", "prompt": "Capital of France?"}\n'
ROWS = '{"prompt": "How do I bake bread?", "response": "Mix flour and water."}\n'
HUGE_PROMPT = json.dumps({"prompt": "bread " * 40_000}) + "\n"  # 240 000 characters
LONG_PROMPT = json.dumps({"prompt": "bread " * 3_000}) + "\n"  # fits the character limit, not the tiny context
SOURCES = ("sources:\n  - name: toy\n    path: pairs.jsonl\n    format: pairs\n"
           "    subsets: {a: helpfulness, b: harmlessness}\n")
RM_SETTINGS = ["sources={t}/sources.yaml", "backbone={llama}", "backbone_kind=causal_lm", "embedding_cache=none",
               "progress=false", "gating_hidden=[4]"]
TRAIN_SETTINGS = ["model={llama}", "data={t}/pairs.jsonl", "max_steps=1", "batch_size=2", "progress=false",
                  "lora=false", "max_length=64"]
ONLINE_SETTINGS = ["model={llama}", "reward_model={rm}", "prompts={t}/prompts.jsonl", "max_steps=1",
                   "progress=false", "lora=false", "max_new_tokens=4"]
GEN = ["--policy", "{llama}", "--rm", "{rm}", "--prompts", "{t}/prompts.jsonl", "--output", "{t}/out.jsonl",
       "--quiet"]
GUIDED = ["--policy", "{llama}", "--prompts", "{t}/prompts.jsonl", "--output", "{t}/out.jsonl"]
FRONT = ["--output", "{t}/report", "--reference", "{llama}", "--reward-model", "{rm}", "--prompts",
         "{t}/prompts.jsonl"]
P = {"prompts.jsonl": PROMPTS}
D = {"pairs.jsonl": PAIRS}
RMF = {"pairs.jsonl": PAIRS, "sources.yaml": SOURCES}
ONL = {"prompts.jsonl": PROMPTS}
BEFORE, AFTER = True, False  # fails before any model loads / only once a model has loaded

CASES = [
    # ---------------------------------------------------------------- score
    ("score-batch-size-0", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl",
                            "--batch-size", "0"], {"rows.jsonl": ROWS}, 2, ["--batch-size", ">= 1"], BEFORE),
    ("score-batch-size-text", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl",
                               "--batch-size", "many"], {"rows.jsonl": ROWS}, 2, ["--batch-size", "'many'"], BEFORE),
    ("score-empty-input", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": ""}, 2, ["rows.jsonl", "no rows"], BEFORE),
    ("score-missing-input", ["score", "--model", "{rm}", "--input", "{t}/nope.jsonl", "--output", "{t}/o.jsonl"],
     {}, 2, ["nope.jsonl", "not found"], BEFORE),
    ("score-input-is-folder", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": DIR}, 2, ["rows.jsonl", "folder"], BEFORE),
    ("score-malformed-line", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": ROWS + '{"prompt": "x", \n'}, 2, ["rows.jsonl:2", "malformed JSON"], BEFORE),
    ("score-missing-field", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": ROWS + '{"prompt": "x"}\n'}, 2, ["rows.jsonl:2", "'response'"], BEFORE),
    ("score-empty-prompt", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": '{"prompt": "  ", "response": "r"}\n'}, 2, ["rows.jsonl:1", "empty prompt"], BEFORE),
    ("score-huge-prompt", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": HUGE_PROMPT.replace("}", ', "response": "r"}')}, 2, ["rows.jsonl:1", "characters"], BEFORE),
    ("score-weight-twice", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl",
                            "--weights", "helpfulness=1,helpfulness=2"], {"rows.jsonl": ROWS}, 2,
     ["--weights", "given twice"], BEFORE),
    ("score-weight-not-number", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl",
                                 "--weights", "helpfulness=lots"], {"rows.jsonl": ROWS}, 2, ["--weights", "lots"],
     BEFORE),
    ("score-weight-unknown", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl",
                              "--weights", "wit=1"], {"rows.jsonl": ROWS}, 2, ["--weights", "wit"], AFTER),
    ("score-corrupt-rm", ["score", "--model", "{t}/rm", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": ROWS, "rm": CORRUPT_RM}, 2, ["rm/model.safetensors"], BEFORE),
    ("score-rm-empty-folder", ["score", "--model", "{t}/rm", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": ROWS, "rm": DIR}, 2, ["/rm", "no reward model"], BEFORE),
    ("score-rm-missing", ["score", "--model", "{t}/nope", "--input", "{t}/rows.jsonl", "--output", "{t}/o.jsonl"],
     {"rows.jsonl": ROWS}, 2, ["nope", "no such reward model folder"], BEFORE),
    ("score-output-is-folder", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output", "{t}/out"],
     {"rows.jsonl": ROWS, "out": DIR}, 2, ["out", "--output"], BEFORE),
    # ---------------------------------------------------------------- eval-rm
    ("eval-rm-empty-file", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl"], {"pairs.jsonl": ""}, 2,
     ["pairs.jsonl", "no rows"], BEFORE),
    ("eval-rm-bootstrap-0", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl", "--bootstrap", "0"], D, 2,
     ["--bootstrap"], BEFORE),
    ("eval-rm-batch-size-0", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl", "--batch-size", "0"], D, 2,
     ["--batch-size"], BEFORE),
    ("eval-rm-max-pairs-0", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl", "--max-pairs-per-dataset",
                             "0"], D, 2, ["--max-pairs-per-dataset"], BEFORE),
    ("eval-rm-shared-heldout-missing", ["eval-rm", "--model", "{rm}", "--shared-heldout", "{t}/bad/dir"], {}, 2,
     ["bad/dir", "no such folder"], BEFORE),
    ("eval-rm-shared-heldout-wrong", ["eval-rm", "--model", "{rm}", "--shared-heldout", "{t}/data"],
     {"data": DIR}, 2, ["/data", "not the shared data folder"], BEFORE),
    ("eval-rm-shared-heldout-file", ["eval-rm", "--model", "{rm}", "--shared-heldout", "{t}/pairs.jsonl"], D, 2,
     ["pairs.jsonl", "is a file"], BEFORE),
    ("eval-rm-missing-data", ["eval-rm", "--model", "{rm}", "--data", "{t}/nope.jsonl"], {}, 2,
     ["nope.jsonl", "not found"], BEFORE),
    ("eval-rm-no-data", ["eval-rm", "--model", "{rm}"], {}, 2, ["--data"], BEFORE),
    ("eval-rm-corrupt-rm", ["eval-rm", "--model", "{t}/rm", "--data", "{t}/pairs.jsonl"],
     {**D, "rm": CORRUPT_RM}, 2, ["rm/model.safetensors"], BEFORE),
    ("eval-rm-pair-missing-field", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl"],
     {"pairs.jsonl": PAIRS + '{"prompt": "x", "chosen": "y"}\n'}, 2, ["pairs.jsonl:13", "rejected"], BEFORE),
    ("eval-rm-cache-not-sqlite", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl", "--embedding-cache",
                                  "{t}/cache.sqlite", "--quiet"], {**D, "cache.sqlite": "not a database"}, 2,
     ["cache.sqlite", "embedding cache"], AFTER),
    # ---------------------------------------------------------------- train-rm
    ("train-rm-gating-steps-negative", ["train-rm", *RM_SETTINGS, "gating_steps=-1", "--output-dir", "{t}/out"],
     RMF, 2, ["gating_steps", ">= 1"], BEFORE),
    ("train-rm-batch-size-0", ["train-rm", *RM_SETTINGS, "batch_size=0", "--output-dir", "{t}/out"], RMF, 2,
     ["batch_size"], BEFORE),
    ("train-rm-val-fraction", ["train-rm", *RM_SETTINGS, "head_val_fraction=1.5", "--output-dir", "{t}/out"], RMF,
     2, ["head_val_fraction"], BEFORE),
    ("train-rm-dropout-1", ["train-rm", *RM_SETTINGS, "gating_dropout=1", "--output-dir", "{t}/out"], RMF, 2,
     ["gating_dropout"], BEFORE),
    ("train-rm-hidden-0", ["train-rm", *RM_SETTINGS, "gating_hidden=[0]", "--output-dir", "{t}/out"], RMF, 2,
     ["gating_hidden"], BEFORE),
    ("train-rm-lr-0", ["train-rm", *RM_SETTINGS, "gating_lr=0", "--output-dir", "{t}/out"], RMF, 2,
     ["gating_lr"], BEFORE),
    ("train-rm-bt-cs-empty", ["train-rm", *RM_SETTINGS, "bt_cs=[]", "--output-dir", "{t}/out"], RMF, 2,
     ["bt_cs"], BEFORE),
    ("train-rm-backbone-kind", ["train-rm", *RM_SETTINGS, "backbone_kind=rnn", "--output-dir", "{t}/out"], RMF, 2,
     ["backbone_kind", "rnn"], BEFORE),
    ("train-rm-split", ["train-rm", *RM_SETTINGS, "split=dev", "--output-dir", "{t}/out"], RMF, 2, ["split", "dev"],
     BEFORE),
    ("train-rm-unknown-setting", ["train-rm", *RM_SETTINGS, "gating_stepz=5", "--output-dir", "{t}/out"], RMF, 2,
     ["gating_stepz", "unknown setting"], BEFORE),
    ("train-rm-empty-source", ["train-rm", *RM_SETTINGS, "--output-dir", "{t}/out"],
     {"pairs.jsonl": "", "sources.yaml": SOURCES}, 2, ["sources.yaml", "no preference pairs"], BEFORE),
    ("train-rm-one-pair", ["train-rm", *RM_SETTINGS, "--output-dir", "{t}/out"],
     {"pairs.jsonl": ONE_PAIR, "sources.yaml": SOURCES}, 2, ["sources.yaml", "1 preference pair"], BEFORE),
    ("train-rm-config-missing", ["train-rm", "--config", "{t}/nope.yaml", "--output-dir", "{t}/out"], {}, 2,
     ["nope.yaml", "not found"], BEFORE),
    ("train-rm-config-bad-yaml", ["train-rm", "--config", "{t}/c.yaml", "--output-dir", "{t}/out"],
     {"c.yaml": "backbone: minilm\ngating_steps: [1,\n"}, 2, ["c.yaml", "invalid YAML"], BEFORE),
    ("train-rm-config-bad-value", ["train-rm", "--config", "{t}/c.yaml", "--output-dir", "{t}/out"],
     {"c.yaml": "backbone: minilm\ngating_steps: many\n"}, 2, ["c.yaml:2", "gating_steps"], BEFORE),
    ("train-rm-backbone-empty-folder", ["train-rm", *RM_SETTINGS, "backbone={t}/model", "--output-dir", "{t}/out"],
     {**RMF, "model": DIR}, 2, ["no model found in", "/model"], BEFORE),
    ("train-rm-backbone-corrupt", ["train-rm", *RM_SETTINGS, "backbone={t}/model", "--output-dir", "{t}/out"],
     {**RMF, "model": CORRUPT_POLICY}, 2, ["model/model.safetensors", "corrupt"], BEFORE),
    ("train-rm-cache-not-sqlite", ["train-rm", *RM_SETTINGS, "embedding_cache={t}/cache.sqlite", "--output-dir",
                                   "{t}/out"], {**RMF, "cache.sqlite": "not a database"}, 2,
     ["cache.sqlite", "embedding_cache"], AFTER),
    ("train-rm-sources-missing-file", ["train-rm", *RM_SETTINGS, "--output-dir", "{t}/out"],
     {"sources.yaml": SOURCES}, 2, ["sources.yaml", "pairs.jsonl"], BEFORE),
    # ---------------------------------------------------------------- bon
    ("bon-n-0", ["bon", *GEN, "--n", "0"], P, 2, ["--n", ">= 1"], BEFORE),
    ("bon-batch-rows-0", ["bon", *GEN, "--batch-rows", "0"], P, 2, ["--batch-rows"], BEFORE),
    ("bon-max-new-tokens-0", ["bon", *GEN, "--max-new-tokens", "0"], P, 2, ["--max-new-tokens"], BEFORE),
    ("bon-temperature-negative", ["bon", *GEN, "--temperature", "-1"], P, 2, ["--temperature"], BEFORE),
    ("bon-temperature-nan", ["bon", *GEN, "--temperature", "nan"], P, 2, ["--temperature"], BEFORE),
    ("bon-top-p-0", ["bon", *GEN, "--top-p", "0"], P, 2, ["--top-p", "(0, 1]"], BEFORE),
    ("bon-top-p-above-1", ["bon", *GEN, "--top-p", "1.5"], P, 2, ["--top-p", "(0, 1]"], BEFORE),
    ("bon-top-k-negative", ["bon", *GEN, "--top-k", "-1"], P, 2, ["--top-k"], BEFORE),
    ("bon-rejection-rate", ["bon", *GEN, "--method", "speculative", "--rejection-rate", "1.5"], P, 2,
     ["rejection"], BEFORE),
    ("bon-decision-tokens", ["bon", *GEN, "--decision-tokens", "16,x"], P, 2, ["decision_tokens"], BEFORE),
    ("bon-weight-twice", ["bon", *GEN, "--weights", "helpfulness=1,helpfulness=1"], P, 2, ["given twice"], BEFORE),
    ("bon-policy-empty-folder", ["bon", *GEN[:1], "{t}/model", *GEN[2:]], {**P, "model": DIR}, 2,
     ["no model found in", "/model"], BEFORE),
    ("bon-policy-corrupt", ["bon", *GEN[:1], "{t}/model", *GEN[2:]], {**P, "model": CORRUPT_POLICY}, 2,
     ["model/model.safetensors"], BEFORE),
    ("bon-policy-cut-short", ["bon", *GEN[:1], "{t}/model", *GEN[2:]], {**P, "model": CUT_POLICY}, 2,
     ["model/model.safetensors"], BEFORE),
    ("bon-policy-is-run-folder", ["bon", *GEN[:1], "{t}/run", *GEN[2:]], {**P, "run/policy": POLICY}, 2,
     ["no model found in", "training run folder", "run/policy"], BEFORE),
    ("bon-policy-missing", ["bon", *GEN[:1], "{t}/nope", *GEN[2:]], P, 2, ["nope", "--policy"], BEFORE),
    ("bon-policy-is-file", ["bon", *GEN[:1], "{t}/prompts.jsonl", *GEN[2:]], P, 2, ["--policy", "is a file"],
     BEFORE),
    ("bon-rm-empty-folder", ["bon", *GEN[:3], "{t}/rm", *GEN[4:]], {**P, "rm": DIR}, 2, ["/rm", "--rm"], BEFORE),
    ("bon-prompts-missing", ["bon", *GEN], {}, 2, ["prompts.jsonl", "--prompts"], BEFORE),
    ("bon-prompts-empty", ["bon", *GEN], {"prompts.jsonl": ""}, 2, ["prompts.jsonl", "no rows"], BEFORE),
    ("bon-prompts-duplicate-id", ["bon", *GEN], {"prompts.jsonl": PROMPTS + '{"id": "p1", "prompt": "again"}\n'},
     2, ["prompts.jsonl:3", "duplicate id"], BEFORE),
    ("bon-prompt-huge", ["bon", *GEN], {"prompts.jsonl": PROMPTS + HUGE_PROMPT}, 2,
     ["prompts.jsonl:3", "characters"], BEFORE),
    ("bon-prompt-over-context", ["bon", *GEN], {"prompts.jsonl": PROMPTS + LONG_PROMPT}, 2,
     ["prompts.jsonl:3", "context"], AFTER),
    ("bon-output-is-folder", ["bon", *GEN[:-2], "{t}/out", "--quiet"], {**P, "out": DIR}, 2, ["out", "--output"],
     BEFORE),
    # ---------------------------------------------------------------- calibrate
    ("calibrate-m-0", ["calibrate", *GEN, "--m", "0"], P, 2, ["--m"], BEFORE),
    ("calibrate-top-p-0", ["calibrate", *GEN, "--top-p", "0"], P, 2, ["--top-p"], BEFORE),
    ("calibrate-prompts-folder", ["calibrate", *GEN], {"prompts.jsonl": DIR}, 2, ["prompts.jsonl", "folder"],
     BEFORE),
    ("calibrate-policy-corrupt", ["calibrate", *GEN[:1], "{t}/model", *GEN[2:]], {**P, "model": CORRUPT_POLICY}, 2,
     ["model/model.safetensors"], BEFORE),
    ("calibrate-txt-prompt-huge", ["calibrate", *GEN[:5], "{t}/p.txt", *GEN[6:]],
     {"p.txt": "hello\n" + "bread " * 40_000 + "\n"}, 2, ["p.txt:2", "characters"], BEFORE),
    # ---------------------------------------------------------------- guided
    ("guided-n-0", ["guided", *GUIDED, "--n", "0"], P, 2, ["--n"], BEFORE),
    ("guided-beta-0", ["guided", *GUIDED, "--beta", "0"], P, 2, ["--beta"], BEFORE),
    ("guided-reward-lm-empty", ["guided", *GUIDED, "--reward-lm", "{t}/lm=1"], {**P, "lm": DIR}, 2,
     ["no model found in", "/lm"], BEFORE),
    ("guided-reward-lm-negative", ["guided", *GUIDED, "--reward-lm", "{llama}=-1"], P, 2, ["--reward-lm", "-1"],
     BEFORE),
    ("guided-reward-lm-weight-text", ["guided", *GUIDED, "--reward-lm", "{llama}=heavy"], P, 2,
     ["--reward-lm", "heavy"], BEFORE),
    ("guided-policy-corrupt", ["guided", *GUIDED[:1], "{t}/model", *GUIDED[2:]], {**P, "model": CORRUPT_POLICY},
     2, ["model/model.safetensors"], BEFORE),
    ("guided-prompt-over-context", ["guided", *GUIDED], {"prompts.jsonl": LONG_PROMPT}, 2,
     ["prompts.jsonl:1", "context"], AFTER),
    # ---------------------------------------------------------------- dpo / modpo / bond / warp
    ("dpo-beta-negative", ["dpo", *TRAIN_SETTINGS, "beta=-1", "--output-dir", "{t}/run"], D, 2, ["beta"], BEFORE),
    ("dpo-batch-size-0", ["dpo", *TRAIN_SETTINGS, "batch_size=0", "--output-dir", "{t}/run"], D, 2,
     ["batch_size"], BEFORE),
    ("dpo-max-length-1", ["dpo", *TRAIN_SETTINGS, "max_length=1", "--output-dir", "{t}/run"], D, 2,
     ["max_length"], BEFORE),
    ("dpo-unknown-setting", ["dpo", *TRAIN_SETTINGS, "betta=0.1", "--output-dir", "{t}/run"], D, 2,
     ["betta", "unknown setting"], BEFORE),
    ("dpo-model-empty-folder", ["dpo", *TRAIN_SETTINGS, "model={t}/model", "--output-dir", "{t}/run"],
     {**D, "model": DIR}, 2, ["no model found in", "/model"], BEFORE),
    ("dpo-model-corrupt", ["dpo", *TRAIN_SETTINGS, "model={t}/model", "--output-dir", "{t}/run"],
     {**D, "model": CORRUPT_POLICY}, 2, ["model/model.safetensors"], BEFORE),
    ("dpo-model-missing", ["dpo", *TRAIN_SETTINGS, "model={t}/nope", "--output-dir", "{t}/run"], D, 2,
     ["nope", "model"], BEFORE),
    ("dpo-data-missing", ["dpo", *TRAIN_SETTINGS, "--output-dir", "{t}/run"], {}, 2, ["pairs.jsonl", "not found"],
     BEFORE),
    ("dpo-data-empty", ["dpo", *TRAIN_SETTINGS, "--output-dir", "{t}/run"], {"pairs.jsonl": ""}, 2,
     ["pairs.jsonl", "no preference pairs"], BEFORE),
    ("modpo-weights", ["modpo", *TRAIN_SETTINGS, "weights=[2, -1]", "--output-dir", "{t}/run"], D, 2,
     ["weights"], BEFORE),
    ("bond-variant", ["bond", *ONLINE_SETTINGS, "variant=best", "--output-dir", "{t}/run"], ONL, 2, ["variant"],
     BEFORE),
    ("bond-beta-above-1", ["bond", *ONLINE_SETTINGS, "beta=2", "--output-dir", "{t}/run"], ONL, 2, ["beta"], BEFORE),
    ("bond-top-p-0", ["bond", *ONLINE_SETTINGS, "top_p=0", "--output-dir", "{t}/run"], ONL, 2, ["field 'top_p'"],
     BEFORE),
    ("bond-reward-model-empty", ["bond", *ONLINE_SETTINGS, "reward_model={t}/rm", "--output-dir", "{t}/run"],
     {**ONL, "rm": DIR}, 2, ["/rm", "reward_model"], BEFORE),
    ("warp-one-run", ["warp", *ONLINE_SETTINGS, "num_runs=1", "--output-dir", "{t}/run"], ONL, 2, ["num_runs"],
     BEFORE),
    ("warp-samples-1", ["warp", *ONLINE_SETTINGS, "samples_per_prompt=1", "--output-dir", "{t}/run"], ONL, 2,
     ["samples_per_prompt"], BEFORE),
    ("warp-prompts-missing", ["warp", *ONLINE_SETTINGS, "--output-dir", "{t}/run"], {}, 2,
     ["prompts.jsonl", "not found"], BEFORE),
    # ---------------------------------------------------------------- merge
    ("merge-model-empty-folder", ["merge", "slerp", "--init", "{llama}", "--models", "{llama}", "{t}/m2",
                                  "--output-dir", "{t}/out"], {"m2": DIR}, 2, ["no model found in", "/m2"], BEFORE),
    ("merge-model-corrupt", ["merge", "liti", "--init", "{llama}", "--models", "{t}/m2", "--eta", "0.5",
                             "--output-dir", "{t}/out"], {"m2": CORRUPT_POLICY}, 2, ["m2/model.safetensors"], BEFORE),
    ("merge-eta-above-1", ["merge", "liti", "--init", "{llama}", "--models", "{llama}", "--eta", "2",
                           "--output-dir", "{t}/out"], {}, 2, ["--eta", "[0, 1]"], BEFORE),
    ("merge-mu-0", ["merge", "ema", "--models", "{llama}", "{llama}", "--mu", "0", "--output-dir", "{t}/out"], {}, 2,
     ["--mu", "(0, 1]"], BEFORE),
    ("merge-lam-negative", ["merge", "slerp", "--init", "{llama}", "--models", "{llama}", "{llama}", "--lam", "-0.5",
                            "--output-dir", "{t}/out"], {}, 2, ["--lam"], BEFORE),
    ("merge-model-missing", ["merge", "ema", "--models", "{llama}", "{t}/nope", "--mu", "0.5", "--output-dir",
                             "{t}/out"], {}, 2, ["nope"], BEFORE),
    # ---------------------------------------------------------------- front
    ("front-run-empty-folder", ["front", "--runs", "{t}/run", *FRONT], {**P, "run": DIR}, 2,
     ["no model found in", "/run"], BEFORE),
    ("front-run-corrupt", ["front", "--runs", "{t}/run", *FRONT], {**P, "run": CORRUPT_POLICY}, 2,
     ["run/model.safetensors"], BEFORE),
    ("front-run-missing", ["front", "--runs", "{t}/nope", *FRONT], P, 2, ["nope", "--runs"], BEFORE),
    ("front-num-prompts-0", ["front", "--runs", "{llama}", *FRONT, "--num-prompts", "0"], P, 2, ["--num-prompts"],
     BEFORE),
    ("front-max-new-tokens-0", ["front", "--runs", "{llama}", *FRONT, "--max-new-tokens", "0"], P, 2,
     ["--max-new-tokens"], BEFORE),
    ("front-batch-rows-0", ["front", "--runs", "{llama}", *FRONT, "--batch-rows", "0"], P, 2, ["--batch-rows"],
     BEFORE),
    ("front-samples-0", ["front", "--runs", "{llama}", *FRONT, "--samples-per-prompt", "0"], P, 2,
     ["--samples-per-prompt"], BEFORE),
    ("front-bon-sizes", ["front", "--runs", "{llama}", *FRONT, "--bon", "2,four"], P, 2, ["--bon"], BEFORE),
    ("front-reward-model-empty", ["front", "--runs", "{llama}", *FRONT[:5], "{t}/rm", *FRONT[6:]],
     {**P, "rm": DIR}, 2, ["/rm", "--reward-model"], BEFORE),
    ("front-names-count", ["front", "--runs", "{llama}", *FRONT, "--names", "a", "b"], P, 2, ["--names"], BEFORE),
    ("front-prompts-missing", ["front", "--runs", "{llama}", *FRONT], {}, 2, ["prompts.jsonl", "--prompts"], BEFORE),
    # ---------------------------------------------------------------- export-hf
    ("export-hf-corrupt-rm", ["export-hf", "--model", "{t}/rm", "--weights", "helpfulness=1", "--output-dir",
                              "{t}/out"], {"rm": CORRUPT_RM}, 2, ["rm/model.safetensors"], BEFORE),
    ("export-hf-rm-empty-folder", ["export-hf", "--model", "{t}/rm", "--weights", "helpfulness=1", "--output-dir",
                                   "{t}/out"], {"rm": DIR}, 2, ["/rm"], BEFORE),
    ("export-hf-weight-twice", ["export-hf", "--model", "{rm}", "--weights", "helpfulness=1,helpfulness=1",
                                "--output-dir", "{t}/out"], {}, 2, ["given twice"], BEFORE),
    # ---------------------------------------------------------------- train-genarm
    ("train-genarm-empty-pairs", ["train-genarm", "model={llama}", "--pairs", "{t}/pairs.jsonl", "--output-dir",
                                  "{t}/out"], {"pairs.jsonl": ""}, 2, ["pairs.jsonl", "no rows"], BEFORE),
    ("train-genarm-pairs-missing", ["train-genarm", "model={llama}", "--pairs", "{t}/nope.jsonl", "--output-dir",
                                    "{t}/out"], {}, 2, ["nope.jsonl", "not found"], BEFORE),
    ("train-genarm-beta-0", ["train-genarm", "model={llama}", "beta_r=0", "--pairs", "{t}/pairs.jsonl",
                             "--output-dir", "{t}/out"], D, 2, ["beta_r"], BEFORE),
    ("train-genarm-model-empty", ["train-genarm", "model={t}/model", "--pairs", "{t}/pairs.jsonl", "--output-dir",
                                  "{t}/out"], {**D, "model": DIR}, 2, ["no model found in", "/model"], BEFORE),
    # ---------------------------------------------------------------- output folders and files (never clobbered)
    ("train-rm-into-user-folder", ["train-rm", *RM_SETTINGS, "--output-dir", "{t}/user"],
     {**RMF, "user/thesis.txt": "keep"}, 2, ["/user", "--overwrite"], BEFORE),
    ("train-rm-into-current-folder", ["train-rm", *RM_SETTINGS, "--output-dir", "."], RMF, 2,
     ["current folder"], BEFORE),
    ("train-rm-output-is-file", ["train-rm", *RM_SETTINGS, "--output-dir", "{t}/afile"], {**RMF, "afile": "x"}, 2,
     ["/afile", "is a file"], BEFORE),
    ("score-output-is-input", ["score", "--model", "{rm}", "--input", "{t}/rows.jsonl", "--output",
                               "{t}/rows.jsonl"], {"rows.jsonl": ROWS}, 2, ["rows.jsonl", "one of the inputs"], BEFORE),
    ("eval-rm-output-is-data", ["eval-rm", "--model", "{rm}", "--data", "{t}/pairs.jsonl", "--output",
                                "{t}/pairs.jsonl"], D, 2, ["pairs.jsonl", "one of the inputs"], BEFORE),
    ("bon-output-is-prompts", ["bon", *GEN[:-2], "{t}/prompts.jsonl", "--quiet"], P, 2,
     ["prompts.jsonl", "one of the inputs"], BEFORE),
    ("calibrate-output-is-prompts", ["calibrate", *GEN[:-2], "{t}/prompts.jsonl", "--quiet"], P, 2,
     ["prompts.jsonl", "one of the inputs"], BEFORE),
    ("guided-output-is-prompts", ["guided", *GUIDED[:-1], "{t}/prompts.jsonl"], P, 2,
     ["prompts.jsonl", "one of the inputs"], BEFORE),
    ("export-hf-output-is-file", ["export-hf", "--model", "{rm}", "--weights", "helpfulness=1", "--output-dir",
                                  "{t}/afile"], {"afile": "x"}, 2, ["/afile", "is a file"], BEFORE),
    ("export-hf-into-user-folder", ["export-hf", "--model", "{rm}", "--weights", "helpfulness=1", "--output-dir",
                                    "{t}/user"], {"user/thesis.txt": "keep"}, 2, ["/user", "--overwrite"], BEFORE),
    ("merge-output-is-file", ["merge", "ema", "--models", "{llama}", "{llama}", "--mu", "0.5", "--output-dir",
                              "{t}/afile"], {"afile": "x"}, 2, ["/afile", "is a file"], BEFORE),
    ("merge-into-user-folder", ["merge", "ema", "--models", "{llama}", "{llama}", "--mu", "0.5", "--output-dir",
                                "{t}/user"], {"user/thesis.txt": "keep"}, 2, ["/user", "--overwrite"], BEFORE),
    ("dpo-output-is-file", ["dpo", *TRAIN_SETTINGS, "--output-dir", "{t}/afile"], {**D, "afile": "x"}, 2,
     ["/afile", "is a file"], BEFORE),
    ("dpo-into-user-folder", ["dpo", *TRAIN_SETTINGS, "--output-dir", "{t}/user"],
     {**D, "user/thesis.txt": "keep"}, 2, ["/user", "--overwrite"], BEFORE),
    ("front-into-user-folder", ["front", "--runs", "{llama}", *FRONT[:1], "{t}/user", *FRONT[2:]],
     {**P, "user/thesis.txt": "keep"}, 2, ["/user", "--overwrite"], BEFORE),
    ("train-genarm-into-user-folder", ["train-genarm", "model={llama}", "--pairs", "{t}/pairs.jsonl",
                                       "--output-dir", "{t}/user"], {**D, "user/thesis.txt": "keep"}, 2,
     ["/user", "--overwrite"], BEFORE),
    # ---------------------------------------------------------------- model folders that ask to run their own code
    ("bon-policy-remote-code", ["bon", *GEN[:1], "{t}/evil", *GEN[2:]], {**P, "evil": REMOTE_CODE_POLICY}, 2,
     ["/evil", "--trust-remote-code"], AFTER),
    ("guided-policy-remote-code", ["guided", *GUIDED[:1], "{t}/evil", *GUIDED[2:]],
     {**P, "evil": REMOTE_CODE_POLICY}, 2, ["/evil", "--trust-remote-code"], AFTER),
    ("score-rm-backbone-remote-code", ["score", "--model", "{t}/rm", "--input", "{t}/rows.jsonl", "--output",
                                       "{t}/o.jsonl"], {"rows.jsonl": ROWS, "evil": REMOTE_CODE_POLICY,
                                                        "rm": REMOTE_CODE_RM}, 2, ["/evil", "/rm", "auto_map"], AFTER),
    ("eval-rm-backbone-remote-code", ["eval-rm", "--model", "{t}/rm", "--data", "{t}/pairs.jsonl"],
     {**D, "evil": REMOTE_CODE_POLICY, "rm": REMOTE_CODE_RM}, 2, ["/evil", "auto_map"], AFTER),
    ("export-hf-backbone-remote-code", ["export-hf", "--model", "{t}/rm", "--weights", "helpfulness=1",
                                        "--output-dir", "{t}/out"], {"evil": REMOTE_CODE_POLICY, "rm": REMOTE_CODE_RM},
     2, ["/evil", "auto_map"], AFTER),
    ("train-rm-backbone-remote-code", ["train-rm", *RM_SETTINGS, "backbone={t}/evil", "--output-dir", "{t}/out"],
     {**RMF, "evil": REMOTE_CODE_POLICY}, 2, ["/evil", "auto_map"], AFTER),
    ("dpo-model-remote-code", ["dpo", *TRAIN_SETTINGS, "model={t}/evil", "--output-dir", "{t}/run"],
     {**D, "evil": REMOTE_CODE_POLICY}, 2, ["/evil", "auto_map"], AFTER),
    ("front-reference-remote-code", ["front", "--runs", "{llama}", *FRONT[:3], "{t}/evil", *FRONT[4:]],
     {**P, "evil": REMOTE_CODE_POLICY}, 2, ["/evil", "auto_map"], AFTER),
    # ---------------------------------------------------------------- the command line itself
    ("unknown-command", ["trian-rm"], {}, 2, ["invalid choice", "trian-rm"], BEFORE),
    ("missing-required-flag", ["score", "--model", "{rm}"], {}, 2, ["--input"], BEFORE),
]


@pytest.fixture(scope="module")
def models(tiny_llama_dir, trained_dir):
    return {"llama": Path(tiny_llama_dir), "rm": Path(trained_dir)}


EVIL_CODE = ("from pathlib import Path\n(Path(__file__).parent / 'PWNED').write_text('code ran')\n"
             "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n")


def _make(path: Path, spec, models) -> None:
    if spec is DIR:
        path.mkdir(parents=True)
    elif spec is POLICY:
        shutil.copytree(models["llama"], path)
    elif spec is REMOTE_CODE_POLICY:
        shutil.copytree(models["llama"], path)
        config = json.loads((path / "config.json").read_text())
        config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        (path / "config.json").write_text(json.dumps(config))
        (path / "evil.py").write_text(EVIL_CODE)
    elif spec is REMOTE_CODE_RM:
        shutil.copytree(models["rm"], path)
        config = json.loads((path / "config.json").read_text())
        config["backbone"].update(model=str(path.parent / "evil"), trust_remote_code=True)
        (path / "config.json").write_text(json.dumps(config))
    elif spec in (CORRUPT_POLICY, CUT_POLICY, CORRUPT_RM):
        source = models["rm" if spec is CORRUPT_RM else "llama"]
        shutil.copytree(source, path)
        weights = path / "model.safetensors"
        if spec is CUT_POLICY:
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
        else:
            weights.write_bytes(b"this is not a safetensors file" * 4)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec, encoding="utf-8")


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots` (hidden temporary ones included) with a hash of each file's bytes."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            key = str(p)
            out[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def no_model_loads(monkeypatch):
    """Make every model load and data embedding fail loudly: a case marked BEFORE must stop ahead of them."""
    import paretoalign.embed.models
    import paretoalign.embed.registry
    import paretoalign.inference.policy
    import paretoalign.rewards.reward_model
    import paretoalign.train.genarm_trainer  # noqa: F401  (these bind load_causal_lm on import: import them
    import paretoalign.train.merge
    import paretoalign.train.policy_setup  # noqa: F401  before it is patched, or they would keep the patch)
    import paretoalign.train.run

    forbid_calls(monkeypatch, [(paretoalign.rewards.reward_model.RewardModel, "from_pretrained"),
                               (paretoalign.inference.policy.Policy, "from_pretrained"),
                               (paretoalign.embed.models, "load_causal_lm"),
                               (paretoalign.embed.registry, "load_backbone"),
                               (paretoalign.train.run, "load_policy_for_training"),
                               (paretoalign.train.merge, "load_policy_state")],
                 "the bad input should have been refused before it")


def _needs_model_loads_blocked(request, before: bool):
    if before:
        request.getfixturevalue("no_model_loads")


@pytest.mark.parametrize(("argv", "files", "status", "needles", "before"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_fails_with_one_line_naming_it(argv, files, status, needles, before, models, tmp_path,
                                                 monkeypatch, capsys, request):
    case = tmp_path / "case"
    case.mkdir()
    for name, spec in files.items():
        _make(case / name, spec, models)
    monkeypatch.chdir(case)  # a command that wrote into the working directory would show in the snapshot
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PARETOALIGN_DEBUG", raising=False)
    _needs_model_loads_blocked(request, before)
    subs = {"t": str(case), "llama": str(models["llama"]), "rm": str(models["rm"])}
    args = [a.format(**subs) for a in argv]
    before_files = snapshot(case, *models.values())
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse: a bad flag
        rc = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "Traceback" not in out
    assert rc == status, err
    assert 1 <= len(lines) <= 3, err
    message = " ".join(lines)
    assert "error" in message, err
    for needle in needles:
        assert needle.format(**subs) in message, (needle, err)
    assert snapshot(case, *models.values()) == before_files, "a file was left behind, removed or changed"


def test_the_table_covers_every_command():
    commands = {case[1][0] for case in CASES}
    assert {"score", "eval-rm", "train-rm", "bon", "calibrate", "guided", "dpo", "modpo", "bond", "warp", "merge",
            "front", "export-hf", "train-genarm"} <= commands
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


def test_version(capsys):
    from paretoalign import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"paretoalign {__version__}"


# ---------------------------------------------------------------- beyond the table: exit paths of main()
def test_unexpected_error_is_one_line_with_a_debug_hint_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    import paretoalign.cli

    def boom(args):
        raise RuntimeError("something we did not foresee\nover two lines")

    argv = ["score", "--model", "m", "--input", "i.jsonl", "--output", str(tmp_path / "o.jsonl")]
    monkeypatch.setattr(paretoalign.cli, "build_parser", _parser_with(boom))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "RuntimeError: something we did not foresee over two lines" in err and "--debug" in err
    assert main(["--debug", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("PARETOALIGN_DEBUG", "1")
    assert main(argv) == 1
    assert "Traceback" in capsys.readouterr().err


def _parser_with(func):
    """build_parser whose `score` runs `func` (set_defaults binds the function when the parser is built)."""
    import paretoalign.cli

    real = paretoalign.cli.build_parser

    def build():
        parser = real()
        parser._subparsers._group_actions[0].choices["score"].set_defaults(func=func)
        return parser
    return build


def test_ctrl_c_exits_130_with_one_line_and_leaves_no_output(trained_dir, tmp_path, monkeypatch, capsys):
    from paretoalign.rewards.reward_model import RewardModel

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RewardModel, "score", interrupted)
    (tmp_path / "rows.jsonl").write_text(ROWS)
    before = snapshot(tmp_path)
    rc = main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "rows.jsonl"), "--output",
               str(tmp_path / "out.jsonl"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 130
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted: no output was left half-written (outputs are written only once complete)"]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_ctrl_c_during_training_removes_a_new_run_folder_or_keeps_its_checkpoint(with_checkpoint, tiny_llama_dir,
                                                                                 tmp_path, monkeypatch, capsys):
    import paretoalign.train.dpo_trainer as dpo

    real, calls = dpo.pair_logprobs, []

    def interrupt_on_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dpo, "pair_logprobs", interrupt_on_third_step)
    (tmp_path / "pairs.jsonl").write_text(PAIRS)
    run = tmp_path / "run"
    settings = [s.format(llama=tiny_llama_dir, t=tmp_path) for s in TRAIN_SETTINGS if not s.startswith("max_steps")]
    rc = main(["dpo", *settings, "max_steps=5", *(["save_every=1"] if with_checkpoint else []),
               "--output-dir", str(run)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 130 and err[-1].startswith("interrupted:") and "Traceback" not in " ".join(err)
    if with_checkpoint:
        assert (run / "checkpoint").is_dir() and "rerun the same command to resume" in err[-1]
    else:
        assert not run.exists() and "was removed" in err[-1]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_dpo_reports_how_many_rows_it_cut(tiny_llama_dir, tmp_path, capsys):
    (tmp_path / "pairs.jsonl").write_text(PAIRS)
    settings = [s.format(llama=tiny_llama_dir, t=tmp_path) for s in TRAIN_SETTINGS if not s.startswith("max_length")]
    assert main(["dpo", *settings, "max_length=12", "--output-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "of 24 rows (" in err and "of 12 pairs) are longer than max_length=12 tokens and were cut" in err
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["stats"]["total_rows"] == 24 and 0 < record["stats"]["truncated_rows"] <= 24


def test_json_outputs_write_non_finite_numbers_as_null(tmp_path):
    import math

    import numpy as np

    from paretoalign.atomic_io import write_json_atomic, write_jsonl_atomic

    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"), "d": np.array([1.0, np.nan]),
             "e": np.int64(3)}
    write_json_atomic(tmp_path / "x.json", value)
    write_jsonl_atomic(tmp_path / "x.jsonl", [value])
    expected = {"a": None, "b": [None, None, 1.5], "c": None, "d": [1.0, None], "e": 3}
    for name in ("x.json", "x.jsonl"):
        text = (tmp_path / name).read_text()
        assert "NaN" not in text and "Infinity" not in text
        assert json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}")) == expected
