"""Driver for the kill-and-resume test: train the tiny llama with a checkpoint, optionally slowly.

    python train_driver.py CHECKPOINT OUT.safetensors STEPS_FILE [--resume] [--sleep SECONDS]

Builds the same tiny model and pairs as ``tests/conftest.py`` (same seeds), trains with
``bipo.train(..., checkpoint=CHECKPOINT)``, appends each finished step number to STEPS_FILE,
sleeps SECONDS after every step (so a test can kill it mid-epoch), and saves the vector to OUT.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from steerkit.packing import encode_pairs  # noqa: E402
from steerkit.train import bipo  # noqa: E402
from tests.conftest import TinyTokenizer, random_pairs, tiny_model  # noqa: E402  (also sets torch threads)

CFG = dict(layer=1, epochs=4, batch_size=4, warmup_steps=2, lr=1e-2, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("steps_file")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    args = ap.parse_args()
    steps = Path(args.steps_file)

    def on_step(step: int, _row: dict) -> None:
        with steps.open("a") as fh:
            fh.write(f"{step}\n")
        if args.sleep:
            time.sleep(args.sleep)

    model = tiny_model("llama", seed=0)
    enc = encode_pairs(TinyTokenizer(), random_pairs())
    result = bipo.train(
        model,
        enc,
        bipo.BipoConfig(**CFG),
        0,
        progress=False,
        checkpoint=args.checkpoint,
        resume=args.resume,
        on_step=on_step,
    )
    result.vector.save(args.out)


if __name__ == "__main__":
    main()
