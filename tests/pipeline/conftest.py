"""The pipeline on a tiny setup: a random 4-layer Llama saved as a model folder with a real
(character-level) tokenizer, a few seed pairs per behavior, and a throw-away git + DVC project
holding copies of params.yaml's layout, dvc.yaml and flows/.

Prefect runs against one temporary API for the whole session (``prefect_test_harness``), with the
offline settings of the Makefile; they must be set before prefect is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The Makefile's environment, before prefect or dvc is imported anywhere in this session.
from steerkit.pipeline.run import offline_env

from ..conftest import REPO

offline_env(REPO)
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(_k, _v)

BEHAVIORS = ("power-seeking", "wealth-seeking")
N_TRAIN, N_TEST = 8, 4


# ------------------------------------------------------------------------------- tiny model
def save_tiny_model(folder: Path) -> Path:
    """A random 4-layer Llama + a character-level ``PreTrainedTokenizerFast`` with a chat template."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


# ----------------------------------------------------------------------------- tiny project
#: the first behavior's training on the tiny model: enough to steer it, so that the gate promotes it (the
#: second keeps one epoch at a small lr: a vector that does not steer, which the gate holds)
TRAINED_TO_STEER = {"epochs": 10, "lr": 0.1}


def tiny_params(model_dir: Path) -> dict:
    """params.yaml for the tiny project: the shipped layout, tiny sizes."""
    return {
        "model": {"spec": str(model_dir), "dir": model_dir.name},
        "train": {"layer": 1, "epochs": 1, "lr": 0.01, "batch_size": 4, "warmup_steps": 0, "baseline": "caa"},
        "evaluate": {
            "multipliers": [-1, 0, 1],
            "judge": "none",
            "n_open": 0,
            "batch_size": 8,
            "texts": "data/seed/neutral.txt",
        },
        "gate": {"beat_caa": False},  # CAA steers the tiny model about as well: the other rules decide here
        "behaviors": {
            b: {
                "data": {"train": f"data/seed/{b}/train.jsonl", "test": f"data/seed/{b}/test.jsonl"},
                "train": TRAINED_TO_STEER if b == BEHAVIORS[0] else {},
                "evaluate": {},
            }
            for b in BEHAVIORS
        },
        "derive": {"name": "lora", "data": "data/seed/neutral.txt", "steps": 2, "lr": 0.01, "r": 2, "batch_size": 2},
        "transfer": {"multipliers": [-1, 1], "merged": False},
        "compose": {"multipliers": [-1, 1], "fluency": False},
        "combos": {"power-wealth": {"vectors": list(BEHAVIORS), "weights": [1, 1]}},
    }


def sync_dvc_yaml(root: Path) -> None:
    """dvc.yaml's derived parts for this project's params (its model and layer name the artifacts)."""
    from steerkit.pipeline.dvcyaml import sync
    from steerkit.pipeline.graph import artifacts, foreach_items
    from steerkit.pipeline.params import load_params

    p = load_params(root / "params.yaml")
    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    (root / "dvc.yaml").write_text(sync(text, artifacts(p), foreach_items(p)), encoding="utf-8")


def write_params(root: Path, params: dict) -> None:
    import yaml

    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def make_project(root: Path, model_dir: Path, git: bool = True) -> Path:
    """A project folder with the pipeline files, tiny data and params; a git + DVC repo when ``git``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "prefect.yaml", ".gitignore", "vectors/releases.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    (root / "flows").mkdir(exist_ok=True)
    shutil.copy(REPO / "flows" / "pipeline.py", root / "flows" / "pipeline.py")
    # the code the stages run is a dependency of theirs (dvc.yaml): the project holds it, as this repository does
    shutil.copytree(REPO / "steerkit", root / "steerkit", ignore=shutil.ignore_patterns("__pycache__"))
    for b in BEHAVIORS:
        dest = root / "data" / "seed" / b
        dest.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", N_TRAIN), ("test", N_TEST)):
            lines = (REPO / "data" / "seed" / b / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
            (dest / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    neutral = (REPO / "steerkit" / "data" / "neutral.txt").read_text(encoding="utf-8").splitlines()[:6]
    (root / "data" / "seed" / "neutral.txt").write_text("\n".join(neutral) + "\n", encoding="utf-8")
    write_params(root, tiny_params(model_dir))
    sync_dvc_yaml(root)
    if git:
        run(["git", "init", "-q"], root)
        run(["git", "config", "user.email", "t@example.invalid"], root)
        run(["git", "config", "user.name", "t"], root)
        dvc(root, "init", "-q")
        shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the shipped settings: the local remote
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-q", "-m", "tiny project"], root)
    return root


def tool_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # `steerkit` for dvc's cmds
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], root, check)


def dvc_status(root: Path) -> dict:
    """``dvc status --json``: {} when every stage is up to date."""
    return json.loads(dvc(root, "status", "--json").stdout or "{}")


def load_flows(root: Path):
    """The project's flows/pipeline.py, loaded the way `steerkit pipeline run` loads it."""
    from steerkit.pipeline.flowfile import load_flow

    return load_flow(root)


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


# ----------------------------------------------------------------------- the first run, kept
#: what test_flow.py's first run made (dvc.lock, the catalog, the release history), kept for the Dask test to
#: compare its run with: one threads-runner run of the tiny project serves both
_FIRST_RUN: dict[str, Path] = {}
KEPT = ("dvc.lock", "vectors/catalog.json", "vectors/releases.json")


def keep_first_run(project: Path, into: Path) -> Path:
    """Copy what a first run of the tiny project made to ``into``, for :func:`first_run`."""
    for rel in KEPT:
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project / rel, into / rel)
    _FIRST_RUN.setdefault("root", into)
    return into


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, tiny_model_dir, prefect_api) -> Path:
    """The tiny project's first threads-runner run (what test_flow.py's first test kept, else a run made here)."""
    if "root" not in _FIRST_RUN:  # this module alone: make the reference
        root = make_project(tmp_path_factory.mktemp("first-run") / "proj", tiny_model_dir)
        cwd = os.getcwd()
        try:
            os.chdir(root)
            summary = load_flows(root).run_pipeline(root=str(root), retries=0)
        finally:
            os.chdir(cwd)
        assert summary["ok"], summary["message"]
        keep_first_run(root, tmp_path_factory.mktemp("first-run-kept"))
    return _FIRST_RUN["root"]


def alive(pid: int) -> bool:
    """The process ``pid`` is running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
