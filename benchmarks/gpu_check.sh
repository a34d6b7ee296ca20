#!/usr/bin/env bash
# One short run on a lent GPU (the device tool: 15 minutes in all): the numbers issue "Speed" asks for on CUDA.
#   bash benchmarks/gpu_check.sh            # from the repository root, on the GPU machine
# 1. a 7B-shaped random Llama (4096 x 32, bf16): plain vs fast vs the compiled step (torch.compile,
#    mode reduce-overhead = CUDA graphs), and K = 8 vectors in one pass against 8 solo runs;
# 2. the device-placement test on a real GPU (the stage's process sees only its card);
# 3. a stage forked from the warm server uses CUDA (the server imported torch and never initialised CUDA).
# Each line of results/ is one JSON object; BENCHMARKS.md records them with the card and the date.
set -euo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
python -m pip install -q -e . --no-deps >/dev/null 2>&1 || true
timeout 420 python benchmarks/bench_train.py --synthetic 4096x32 --device cuda --dtype bf16 --pairs 32 --epochs 2 \
  --layer 15 --k 8 --compiled --json 2>&1 | tee "$OUT/bench_7b_bf16.log" | tail -n 1 > "$OUT/bench_7b_bf16.json"
timeout 120 python -m pytest -q tests/pipeline/test_devices.py 2>&1 | tail -n 3 | tee "$OUT/devices.txt"
timeout 120 python -c "
import os, sys
from steerkit.pipeline import launch
code = 'import torch; x = torch.ones(4, device=\"cuda\"); print(\"forked stage on\", torch.cuda.get_device_name(), float(x.sum()))'
p = launch.start([sys.executable, '-c', code], os.getcwd(), dict(os.environ))
print(type(p).__name__, p.stdout.read().strip(), 'exit', p.wait())
" 2>&1 | tee "$OUT/forked_cuda.txt"
