"""Embedding throughput: our batched CausalLMBackbone vs the naive per-example loop public pipelines use.

Both run on the SAME model object (one AutoModelForCausalLM; ours uses its base model) and the same real rows
(HH-RLHF test prompts parsed into chat messages, with their chosen reply), all on CPU in fp32:

(a) naive: for each row, tokenize the full conversation and the generation prompt separately and run the
    causal LM (LM head included) with output_hidden_states=True on each: 2 forward passes per row; the
    features are hidden_states[-1] at the last token of each.
(b) ours: `CausalLMBackbone.embed`: one pass per row (h(x) read from the same pass), length-sorted batches,
    no LM head. Tried at each --batch-sizes value; the best one is reported.

Throughput is tokens/s over the tokens of the full conversations (the same count for both), median of --repeats.
The features of (a) and (b) are compared (max |diff|). Rows longer than --max-length tokens are skipped, so
neither side truncates.

Roofline: the median fp32 torch.matmul throughput (GFLOP/s) on the model's MLP shape (tokens per batch x hidden)
x (hidden x intermediate), measured in the same run. Our achieved GFLOP/s counts useful work only: 2 x the
non-embedding parameters per token (every linear layer of every block; the embedding lookup and the unused
LM head count 0) plus causal attention on the real tokens, 2 x L(L+1) x hidden per layer for a row of L tokens
(QK^T and AV over the L(L+1)/2 causal pairs, 2 FLOPs per multiply-add). Padding is not counted as work.

Usage: .venv/bin/python benchmarks/bench_embed.py [--model smollm2] [--rows 48] [--repeats 3]
Prints a table and a final JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("..") / "shared" / "data" / "hh_rlhf" / "hh_rlhf_test.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="alias, .gguf file, local directory (default smollm2)")
    ap.add_argument("--rows", type=int, default=48, help="rows to embed (default 48)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="HH-RLHF jsonl, relative to the repo root (default ../shared/data/hh_rlhf/hh_rlhf_test.jsonl)")
    ap.add_argument("--batch-sizes", default="4,8,16", help="our batch sizes to try (default 4,8,16)")
    ap.add_argument("--max-length", type=int, default=512, help="longest row kept, in tokens (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def load_rows(path: Path, n: int, seed: int) -> tuple[list[list[dict]], list[str]]:
    """n random rows of the HH file: (prompt messages, chosen reply)."""
    from paretoalign.data.hh import parse_hh_dialogue

    lines = path.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(lines)
    prompts, responses = [], []
    for line in lines:
        row = json.loads(line)
        if not row["chosen"].strip():
            continue
        prompts.append(parse_hh_dialogue(row["prompt"]))
        responses.append(row["chosen"])
        if len(prompts) == 4 * n:
            break
    return prompts, responses


def naive_features(lm, tokenizer, prompts, responses) -> tuple[np.ndarray, np.ndarray]:
    """The per-example loop: 2 full causal-LM forwards per row, LM head included, no batching."""
    resp, prom = [], []
    with torch.no_grad():
        for prompt, response in zip(prompts, responses, strict=True):
            full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}],
                                                 tokenize=False)
            head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            for text, out in ((full, resp), (head, prom)):
                ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
                hidden = lm(**ids, output_hidden_states=True).hidden_states[-1]
                out.append(hidden[0, -1].float().numpy())
    return np.stack(resp), np.stack(prom)


def matmul_gflops(m: int, k: int, n: int, repeats: int = 7) -> float:
    """Median fp32 torch.matmul throughput of an (m, k) x (k, n) product, GFLOP/s."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.matmul(a, b)  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from paretoalign.embed.causal_lm import CausalLMBackbone
    from paretoalign.embed.chat_format import conversation_text
    from paretoalign.embed.models import check_remote_code, quiet_transformers, resolve_model

    data = args.data if args.data.is_absolute() else REPO_ROOT / args.data
    if not data.is_file():
        print(f"data file not found: {data}", file=sys.stderr)
        return 2
    path = resolve_model(args.model)
    check_remote_code(path)  # a benchmark never runs a model folder's own code
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=False).eval()
    ours = CausalLMBackbone(lm, tokenizer, max_length=args.max_length)  # the SAME model object

    candidates = load_rows(data, args.rows, args.seed)
    prompts, responses, lengths = [], [], []
    for prompt, response in zip(*candidates, strict=True):
        text, _ = conversation_text(tokenizer, prompt, response)
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n_tokens <= args.max_length:
            prompts.append(prompt)
            responses.append(response)
            lengths.append(n_tokens)
        if len(prompts) == args.rows:
            break
    tokens = sum(lengths)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cfg = lm.config
    print(f"model {args.model} ({path}); {len(prompts)} rows, {tokens} tokens (mean {tokens / len(prompts):.0f}, "
          f"max {max(lengths)}); torch threads {torch.get_num_threads()}", flush=True)

    naive_times, our_times = [], {b: [] for b in batch_sizes}
    naive_out, ours_out = None, {}
    for rep in range(args.repeats):
        seconds, naive_out = timed(lambda: naive_features(lm, tokenizer, prompts, responses))
        naive_times.append(seconds)
        line = [f"repeat {rep + 1}: naive {seconds:.1f}s"]
        for b in batch_sizes:
            seconds, feats = timed(lambda b=b: ours.embed(prompts, responses, batch_size=b))
            our_times[b].append(seconds)
            ours_out[b] = feats
            line.append(f"ours bs={b} {seconds:.1f}s")
        print(", ".join(line), flush=True)

    naive_tps = tokens / statistics.median(naive_times)
    our_tps = {b: tokens / statistics.median(t) for b, t in our_times.items()}
    best = max(our_tps, key=our_tps.get)
    diff = max(float(np.abs(ours_out[b].response - naive_out[0]).max()) for b in batch_sizes)
    diff = max(diff, max(float(np.abs(ours_out[b].prompt - naive_out[1]).max()) for b in batch_sizes))

    # Roofline and achieved useful GFLOP/s.
    hidden, inter = cfg.hidden_size, cfg.intermediate_size
    embed_params = sum(p.numel() for p in lm.get_input_embeddings().parameters())
    non_embedding = sum(p.numel() for p in lm.model.parameters()) - embed_params
    attention_flops = sum(2 * n * (n + 1) * hidden * cfg.num_hidden_layers for n in lengths)
    flops = 2 * non_embedding * tokens + attention_flops
    m = best * int(round(tokens / len(prompts)))
    roofline = matmul_gflops(m, hidden, inter)
    achieved = flops / statistics.median(our_times[best]) / 1e9
    naive_achieved = flops / statistics.median(naive_times) / 1e9

    print()
    print(f"{'method':<22}{'tokens/s':>10}{'vs naive':>10}{'GFLOP/s':>10}{'of roofline':>13}")
    print(f"{'naive per-example':<22}{naive_tps:>10.0f}{1.0:>9.2f}x{naive_achieved:>10.1f}"
          f"{naive_achieved / roofline:>12.0%}")
    for b in batch_sizes:
        g = flops / statistics.median(our_times[b]) / 1e9
        mark = " *" if b == best else ""
        print(f"{'ours batch ' + str(b) + mark:<22}{our_tps[b]:>10.0f}{our_tps[b] / naive_tps:>9.2f}x{g:>10.1f}"
              f"{g / roofline:>12.0%}")
    print(f"roofline: fp32 matmul ({m}x{hidden})x({hidden}x{inter}) = {roofline:.1f} GFLOP/s (median)")
    print(f"useful FLOPs: 2 x {non_embedding / 1e6:.1f}M non-embedding params x {tokens} tokens + causal attention "
          f"{attention_flops / 1e9:.2f} GFLOP = {flops / 1e9:.1f} GFLOP; feature max |diff| ours vs naive: {diff:.2e}")
    result = {
        "model": args.model, "rows": len(prompts), "tokens": tokens, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "naive_seconds": naive_times, "ours_seconds": {str(b): t for b, t in our_times.items()},
        "naive_tokens_per_s": naive_tps, "ours_tokens_per_s": {str(b): v for b, v in our_tps.items()},
        "best_batch_size": best, "speedup": our_tps[best] / naive_tps,
        "max_abs_diff": diff, "useful_gflop": flops / 1e9, "non_embedding_params": non_embedding,
        "achieved_gflops": achieved, "naive_achieved_gflops": naive_achieved,
        "roofline_gflops": roofline, "roofline_shape": [m, hidden, inter],
        "achieved_over_roofline": achieved / roofline,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
