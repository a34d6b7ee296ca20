"""Profile one fast-engine BiPO step (forward + backward) and print the top kernels/ops.

python benchmarks/profile_step.py --synthetic 2048x16 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import synthetic_model, synthetic_pairs

from steerkit.train.engines import FastEngine, PlainEngine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", default="2048x16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--engine", default="fast")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    model = synthetic_model(args.synthetic, args.device, dtype)
    enc = synthetic_pairs(8, model.config.vocab_size)
    layer = model.config.num_hidden_layers // 2
    eng = FastEngine(model, enc, layer, 0) if args.engine == "fast" else PlainEngine(model, enc, layer, 0)
    v = torch.zeros(model.config.hidden_size, device=args.device, requires_grad=True)
    for _ in range(3):
        pos, neg = eng.logps([0, 1, 2, 3], v)
        (pos - neg).sum().backward()
    acts = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if args.device == "cuda" else []
    )
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            pos, neg = eng.logps([0, 1, 2, 3], v)
            (pos - neg).sum().backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18))


if __name__ == "__main__":
    main()
