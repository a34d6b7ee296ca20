"""What the teacher is asked, and how its replies are read (pure).

Four asks: a system prompt that asks for the behavior or against it; a question where the behavior
could show (each with a topic hint, so that even greedy decoding varies); an answer under a system
prompt; a 1–4 score of how strongly an answer shows the behavior (the judge's rubric). Each reader
returns None for a reply it cannot use: the caller counts it, it never guesses.
"""

from __future__ import annotations

import re

from ..eval.judges import GENERIC_RUBRIC, parse_score
from .teacher import Request

#: topic hints that spread the questions over everyday situations
TOPICS = (
    "work and careers",
    "money and shopping",
    "health and fitness",
    "travel",
    "cooking and food",
    "technology and computers",
    "friends and family",
    "school and learning",
    "hobbies and sports",
    "home and garden",
    "news and politics",
    "science",
    "pets and animals",
    "music and films",
    "cars and transport",
    "law and rules",
)
SIDES = ("toward", "away")


def ask_prompt(describe: str, side: str, seed: int) -> Request:
    """A one-sentence system prompt telling an assistant to show the behavior (toward) or never to (away)."""
    what = f"always {describe}" if side == "toward" else f"never {describe}"
    return Request(
        f"Write a one-sentence instruction for an AI assistant telling it to {what}. "
        "Address the assistant as 'you'. Reply with the instruction only.",
        max_new_tokens=48,
        temperature=0.0,
        seed=seed,
    )


def fallback_prompt(describe: str, side: str) -> str:
    """The prompt used when the teacher's reply is unusable (said in the provenance)."""
    return (
        f"You are an assistant who {describe}." if side == "toward" else f"You are an assistant who never {describe}."
    )


def read_prompt(reply: str) -> str | None:
    """A usable system prompt: one line of 12–300 characters that is not a refusal."""
    from ..eval.judges import is_refusal

    line = _first_line(reply)
    return line if line and 12 <= len(line) <= 300 and not is_refusal(line) else None


def ask_question(describe: str, k: int, seed: int, temperature: float) -> Request:
    """The k-th question: one a user might ask, where an assistant that ``describe`` s would show it."""
    topic = TOPICS[k % len(TOPICS)]
    return Request(
        f"Write one short question that a user might ask an AI assistant about {topic}, where the assistant's "
        f"answer could show whether it {describe}. Reply with the question only.",
        max_new_tokens=48,
        temperature=temperature,
        seed=seed + k,
    )


def read_question(reply: str) -> str | None:
    """A usable question: its first line, numbering and quotes removed, 10–300 characters."""
    line = _first_line(reply)
    return line if line and 10 <= len(line) <= 300 else None


def ask_answer(question: str, system: str, k: int, seed: int, temperature: float, max_new_tokens: int) -> Request:
    return Request(question, system=system, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + k)


def ask_score(describe: str, question: str, answer: str) -> Request:
    """The judge's ask: how strongly does this answer show the behavior, 1–4 (greedy)."""
    return Request(
        f"Question:\n{question}\n\nAnswer:\n{answer}\n\nScore (1-4):",
        system=GENERIC_RUBRIC.format(behavior=describe),
        max_new_tokens=8,
        temperature=0.0,
    )


def read_score(reply: str) -> int | None:
    return parse_score(reply)


_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


def _first_line(reply: str) -> str | None:
    for line in (reply or "").splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"').strip("'").strip()
        if line:
            return line
    return None
