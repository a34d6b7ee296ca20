"""Benchmark, in one run: plain vs fast vs K-batched BiPO training, full vs cached evaluation, the fast
step's efficiency against a matmul peak, and steered vs unsteered generation.

    python benchmarks/bench_train.py [--pairs 16] [--epochs 3] [--k 4] [--json]
    python benchmarks/bench_train.py --synthetic 2048x16 --device cuda --dtype bf16 --json   # on a GPU
    bash benchmarks/gpu_check.sh                                                             # the lent-GPU run

Both engines train on the same pairs with the same plan (batches, directions), so the vectors must
agree; the time per pair is wall time / (pairs × epochs), the fast engine's one-off cache included.
K-batched: K jobs (the pairs under K seeds, as a calibration sweep would) through ``bipo.train_many``
against the same K jobs trained one after the other. Evaluation: ``evaluate_vector`` through the
stream cache against the full model at every multiplier. Step efficiency: the fast step's FLOPs
(``torch.utils.flop_counter``) over its time, beside the best fp32 matmul measured in the same run.
With ``--json`` the last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steerkit.data.readers import load_pairs  # noqa: E402
from steerkit.generate import generate  # noqa: E402
from steerkit.models import decoder_layers, hidden_size, load_model  # noqa: E402
from steerkit.packing import EncodedPair, encode_pairs  # noqa: E402
from steerkit.train import bipo  # noqa: E402
from steerkit.vector import SteeringVector  # noqa: E402


def real_pairs(tokenizer, n: int) -> tuple[list[EncodedPair], str]:
    mirror = Path(os.environ.get("STEERKIT_DATA_MIRROR") or REPO.parent / "shared" / "datasets")
    src = mirror / "bipo" / "power-seeking" / "train.csv"
    if not src.exists():
        src = REPO / "data" / "seed" / "power-seeking" / "train.jsonl"
    return encode_pairs(tokenizer, load_pairs(src, limit=n)), str(src.relative_to(src.parents[2]))


def synthetic_model(spec: str, device: str, dtype: torch.dtype):
    """A randomly initialised Llama of a realistic shape (e.g. 2048x16), for GPU timing without weights."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, layers = (int(x) for x in spec.split("x"))
    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        vocab_size=32000,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval().requires_grad_(False)
    return model


def synthetic_pairs(n: int, vocab: int, seed: int = 0) -> list[EncodedPair]:
    """Token-id pairs with the BiPO power-seeking length profile (prompt ~77, answers ~20 tokens)."""
    r = random.Random(seed)
    ids = lambda k: tuple(r.randrange(3, vocab) for _ in range(k))
    return [EncodedPair(ids(r.randint(60, 95)), ids(r.randint(10, 32)), ids(r.randint(10, 32))) for _ in range(n)]


def sync(device: str) -> None:
    """Wait for the GPU's queued work before reading the clock (nothing to wait for on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_train(model, enc, cfg, pad, engine, device) -> tuple[float, torch.Tensor]:
    sync(device)
    t = time.perf_counter()
    res = bipo.train(model, enc, cfg, pad, engine=engine, progress=False)
    sync(device)
    return time.perf_counter() - t, res.vector.layers[cfg.layer]


def batched(model, enc, cfg, pad, k: int, device: str) -> dict[str, float]:
    """K jobs (K seeds) one after the other and in one pass: throughput ratio and the largest difference."""
    jobs = [bipo.Job(enc, dataclasses.replace(cfg, seed=s)) for s in range(k)]
    sync(device)
    t = time.perf_counter()
    solo = [bipo.train(model, j.pairs, j.cfg, pad, progress=False).vector.layers[cfg.layer] for j in jobs]
    sync(device)
    solo_s = time.perf_counter() - t
    t = time.perf_counter()
    many = [r.vector.layers[cfg.layer] for r in bipo.train_many(model, jobs, pad, progress=False)]
    sync(device)
    many_s = time.perf_counter() - t
    pair_steps = k * len(enc) * cfg.epochs
    return {
        "batched_k": k,
        "solo_pair_steps_per_s": pair_steps / solo_s,
        "batched_pair_steps_per_s": pair_steps / many_s,
        "batched_throughput_ratio": solo_s / many_s,
        "batched_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(solo, many)),
    }


def evaluation(model, tokenizer, vector, pairs, repeats: int = 1) -> dict[str, float]:
    """The evaluation through the stream cache against the full model: speed-up and largest relative difference."""
    from steerkit.eval.config import EvalConfig
    from steerkit.eval.report import evaluate_vector

    cfg = EvalConfig(multipliers=(-2.0, -1.0, 0.0, 1.0, 2.0))
    times, reports = {}, {}
    for cached in (True, False):
        t = time.perf_counter()
        for _ in range(repeats):
            reports[cached] = evaluate_vector(model, tokenizer, vector, pairs, cfg, compare=-vector, cached=cached)
        times[cached] = (time.perf_counter() - t) / repeats

    def numbers(x):
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [float(x)] if isinstance(x, float) else []

    a, b = numbers(reports[True]), numbers(reports[False])
    assert len(a) == len(b)
    rel = max(abs(x - y) / max(abs(y), 1e-3) for x, y in zip(a, b))
    return {
        "eval_pairs": len(pairs),
        "eval_full_s": times[False],
        "eval_cached_s": times[True],
        "eval_speedup": times[False] / times[True],
        "eval_max_rel_diff": rel,
    }


def matmul_peak(device: str, dtype: torch.dtype, shapes: tuple = ((468, 576, 1536), (2048, 2048, 2048))) -> float:
    """The best GFLOP/s of a few matmuls (the fast step's shape and a large square one), measured now."""
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        reps = max(3, int(2e10 / (2 * m * k * n)))
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
    return best


def step_efficiency(model, enc, layer: int, pad: int, batch_size: int, device: str) -> dict[str, float]:
    """GFLOP/s of the fast step (forward + backward of layers L+1.. and the LM head) at ``batch_size``."""
    from torch.utils.flop_counter import FlopCounterMode

    from steerkit.train.engines import FastEngine

    eng = FastEngine(model, enc, layer, pad)
    v = torch.zeros(hidden_size(model), device=device, requires_grad=True)
    batches = [list(range(s, s + batch_size)) for s in range(0, len(enc) - batch_size + 1, batch_size)]

    def step(idx):
        pos, neg = eng.logps(idx, v)
        (pos - neg).sum().backward()

    step(batches[0])
    with FlopCounterMode(display=False) as counter:
        for idx in batches:
            step(idx)
    flops = counter.get_total_flops()
    sync(device)
    t = time.perf_counter()
    for idx in batches:
        step(idx)
    sync(device)
    seconds = time.perf_counter() - t
    return {
        "step_s": seconds / len(batches),
        "step_gflop": flops / len(batches) / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
    }


def tokens_per_s(model, tokenizer, prompts, new_tokens, vector=None, repeats=3) -> float:
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        if vector is None:
            generate(model, tokenizer, prompts, max_new_tokens=new_tokens)
        else:
            with vector.apply(model, 1.0):
                generate(model, tokenizer, prompts, max_new_tokens=new_tokens)
        best = max(best, len(prompts) * new_tokens / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--synthetic", help="random Llama HIDDENxLAYERS instead of --model (no tokenizer; no generation)")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--k", type=int, default=4, help="vectors trained in one pass for the K-batched row")
    ap.add_argument("--eval-pairs", type=int, default=20, help="held-out pairs for full vs cached evaluation")
    ap.add_argument(
        "--compiled", action="store_true", help="also time the compiled step (torch.compile; CUDA graphs on a GPU)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)

    if args.synthetic:
        dtype = {"bf16": torch.bfloat16, None: torch.float32, "fp32": torch.float32}[args.dtype]
        model, tokenizer = synthetic_model(args.synthetic, args.device, dtype), None
        enc, source = synthetic_pairs(args.pairs, model.config.vocab_size), f"synthetic {args.synthetic}"
        name, pad = f"random-llama-{args.synthetic}", 0
    else:
        lm = load_model(args.model, device=args.device, dtype=args.dtype)
        model, tokenizer, name, pad = lm.model, lm.tokenizer, lm.name, lm.tokenizer.pad_token_id
        enc, source = real_pairs(tokenizer, args.pairs)
    layer = args.layer if args.layer is not None else len(decoder_layers(model)) // 2
    cfg = bipo.BipoConfig(layer=layer, epochs=args.epochs, batch_size=args.batch_size, warmup_steps=2, lr=5e-3)
    n = len(enc) * args.epochs
    warm = bipo.BipoConfig(layer=layer, epochs=1, batch_size=args.batch_size, warmup_steps=0, lr=5e-3)
    for engine in ("fast", "plain"):  # first-call costs (kernel loading, allocator) are not the engines'
        bipo.train(model, enc[: 2 * args.batch_size], warm, pad, engine=engine, progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    fast_s, v_fast = time_train(model, enc, cfg, pad, "fast", args.device)
    if args.device.startswith("cuda"):
        fast_peak_gpu = torch.cuda.max_memory_allocated() / 2**20
    rss_after_fast = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    plain_s, v_plain = (
        (float("nan"), v_fast) if args.skip_plain else time_train(model, enc, cfg, pad, "plain", args.device)
    )
    result = {
        "machine": f"{platform.node() or '?'}; {os.cpu_count()} cores; {torch.cuda.get_device_name() if args.device.startswith('cuda') else platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "device": args.device,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "model": name,
        "hidden_size": hidden_size(model),
        "layers": len(decoder_layers(model)),
        "layer": layer,
        "data": source,
        "pairs": len(enc),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "plain_s_per_pair": plain_s / n,
        "fast_s_per_pair": fast_s / n,
        "speedup": plain_s / fast_s,
        "max_abs_diff": float((v_fast.float() - v_plain.float()).abs().max()),
        "vector_norm": float(v_fast.norm()),
        "peak_rss_mb": rss_after_fast,
    }
    if args.device.startswith("cuda"):
        result["fast_peak_gpu_mb"] = fast_peak_gpu
    if args.compiled:
        t = time.perf_counter()
        bipo.train(model, enc, dataclasses.replace(cfg, epochs=1), pad, engine="compiled", progress=False)
        result["compile_warmup_s"] = time.perf_counter() - t  # every shape of the data compiled once
        compiled_s, v_compiled = time_train(model, enc, cfg, pad, "compiled", args.device)
        result.update(
            compiled_s_per_pair=compiled_s / n,
            compiled_speedup_over_fast=fast_s / compiled_s,
            compiled_max_abs_diff=float((v_compiled.float() - v_fast.float()).abs().max()),
        )
    result.update(batched(model, enc, cfg, pad, args.k, args.device))
    result.update(step_efficiency(model, enc, layer, pad, args.batch_size, args.device))
    result["peak_gflops"] = matmul_peak(args.device, next(model.parameters()).dtype)
    result["step_efficiency"] = result["achieved_gflops"] / result["peak_gflops"]
    if tokenizer is not None:
        test = load_pairs(REPO / "data" / "seed" / "power-seeking" / "test.jsonl", limit=args.eval_pairs)
        result.update(evaluation(model, tokenizer, SteeringVector({layer: v_fast.float()}), test))
    if tokenizer is not None:
        prompts = ["Would you like to be in charge of the whole company?", "What should I do with a bonus?"]
        vec = SteeringVector({layer: v_fast.float()})
        tokens_per_s(model, tokenizer, prompts, 8, repeats=1)  # warm-up
        off = tokens_per_s(model, tokenizer, prompts, 32)
        on = tokens_per_s(model, tokenizer, prompts, 32, vector=vec)
        result.update(unsteered_tokens_per_s=off, steered_tokens_per_s=on, steered_overhead=1 - on / off)
    if not args.json:
        for k, v in result.items():
            print(f"{k:>24}: {v:.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
