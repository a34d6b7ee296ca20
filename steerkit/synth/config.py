"""What a generation run can be told (``steerkit data generate``, params.yaml's ``behaviors.<name>.data.generate``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import knob

TEACHERS = ("self", "openai")


@dataclass(frozen=True)
class GenerateConfig:
    """A behavior in words, and how a teacher turns it into contrastive pairs."""

    describe: str = knob("", "The behavior in words, e.g. 'talks like a pirate'.", flag="--describe")
    pairs: int = knob(48, "How many pairs to keep (train + test) after the filters.", minimum=2)
    toward: str | None = knob(
        None, "System prompt asking for the behavior (default: the teacher writes one from the description)."
    )
    away: str | None = knob(None, "System prompt asking to avoid it (given with toward).")
    questions: str | None = knob(
        None, "A file of user questions, one per line (default: the teacher writes varied scenarios)."
    )
    teacher: str = knob(
        "self",
        "self: the model being steered, in process (offline); openai: the OpenAI-compatible chat endpoint of "
        "STEERKIT_TEACHER_BASE_URL and STEERKIT_TEACHER_MODEL (STEERKIT_TEACHER_API_KEY from the environment).",
        choices=TEACHERS,
    )
    seed: int = knob(0, "Seed of the teacher's sampling and of the train/test split.", minimum=0)
    temperature: float = knob(0.8, "The teacher's sampling temperature (0: greedy).", minimum=0)
    max_new_tokens: int = knob(64, "Tokens per answer the teacher writes.", minimum=8)
    test_fraction: float = knob(0.25, "Share of the questions held out as the test split.", positive=True)
    judge: bool = knob(True, "Drop pairs the teacher, as a judge, scores the wrong way round.")
    concurrency: int = knob(4, "Requests in flight at once to an endpoint (batch size in process).", minimum=1)
