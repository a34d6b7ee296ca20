"""The teacher: the model that writes the data. The model being steered itself, in process (offline, the
default), or any OpenAI-compatible chat endpoint (a team's vLLM or llama.cpp server, a hosted API).

Both answer a list of :class:`Request` s (a system prompt, a user message, how to sample) with one
text each. The in-process teacher batches them (left-padded ``generate``); the endpoint teacher sends
them concurrently through the ``openai`` client, which retries and times out on its own. A reply that
cannot be used is a :class:`TeacherError` naming the request.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..errors import SteerkitError

ENV = ("STEERKIT_TEACHER_BASE_URL", "STEERKIT_TEACHER_MODEL", "STEERKIT_TEACHER_API_KEY")


class TeacherError(SteerkitError, RuntimeError):
    """The teacher cannot answer (endpoint unreachable or misconfigured, a reply without text)."""


@dataclass(frozen=True)
class Request:
    """One chat turn to the teacher and how to sample its reply."""

    user: str
    system: str | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0

    def key(self, teacher: str) -> str:
        """The request's identity for the journal: the same request to the same teacher is answered once."""
        return hashlib.sha256(json.dumps([teacher, asdict(self)], sort_keys=True).encode()).hexdigest()

    def label(self) -> str:
        return " ".join(self.user.split())[:60]


class Teacher(Protocol):
    name: str  # what the provenance records: the model, never a key

    def info(self) -> dict[str, Any]: ...

    def chat(self, requests: Sequence[Request]) -> list[str]: ...


class LocalTeacher:
    """The model being steered, answering in process: batches of left-padded prompts through ``generate``."""

    def __init__(self, lm: Any, batch_size: int = 4) -> None:
        self.lm, self.batch_size = lm, batch_size
        self.name = f"self:{lm.name}"

    def info(self) -> dict[str, Any]:
        return {"kind": "self", "model": self.lm.name}

    def chat(self, requests: Sequence[Request]) -> list[str]:
        import torch

        from ..models import format_prompt, model_device, pad_token_id

        tok, model, out = self.lm.tokenizer, self.lm.model, []
        pad = pad_token_id(tok)
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start : start + self.batch_size])
            seqs = [
                list(tok(format_prompt(tok, r.user, r.system), add_special_tokens=False)["input_ids"]) for r in batch
            ]
            width = max(map(len, seqs))  # left-padded: every prompt ends where generation starts
            ids = torch.tensor([[pad] * (width - len(q)) + q for q in seqs], device=model_device(model))
            mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs], device=model_device(model))
            temperature, longest = batch[0].temperature, max(r.max_new_tokens for r in batch)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else {}
            torch.manual_seed(batch[0].seed)  # the batch's sampling, fixed by its first request
            with torch.no_grad():
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=longest,
                    pad_token_id=pad,
                    **({"do_sample": False} | sampling),
                )
            replies = tok.batch_decode(gen[:, width:].tolist(), skip_special_tokens=True)
            out += [_cut(t, r.max_new_tokens, tok) for t, r in zip(replies, batch)]
        return out


def _cut(text: str, max_new_tokens: int, tok: Any) -> str:
    """A reply cut to its own request's token budget (a batch generates up to its longest one's)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return (tok.decode(ids[:max_new_tokens]) if len(ids) > max_new_tokens else text).strip()


class ChatTeacher:
    """An OpenAI-compatible ``/chat/completions`` endpoint, ``concurrency`` requests in flight at once."""

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self.base_url = (base_url or os.environ.get(ENV[0]) or "").rstrip("/")
        self.model = model or os.environ.get(ENV[1]) or ""
        if not self.base_url or not self.model:
            raise TeacherError(
                "the OpenAI-compatible teacher needs a base URL and a model name",
                where=ENV[0] if not self.base_url else ENV[1],
                fix=f"set {ENV[0]} (e.g. http://localhost:8000/v1) and {ENV[1]} "
                f"({ENV[2]} if the server needs a key), or use the model itself: teacher self",
            )
        from openai import OpenAI

        key = api_key if api_key is not None else os.environ.get(ENV[2])
        self.client = OpenAI(base_url=self.base_url, api_key=key or "none", timeout=timeout, max_retries=max_retries)
        self.concurrency, self.name = concurrency, self.model

    def info(self) -> dict[str, Any]:
        return {"kind": "openai", "model": self.model, "endpoint": self.base_url}  # never the key

    def _one(self, i: int, r: Request) -> str:
        import openai

        messages = ([{"role": "system", "content": r.system}] if r.system else []) + [
            {"role": "user", "content": r.user}
        ]
        where = f"{self.base_url} (request {i}: {r.label()!r})"
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=r.max_new_tokens,
                temperature=r.temperature,
                seed=r.seed,
            )
        except openai.APITimeoutError:
            raise TeacherError("no reply within the timeout, after retries", where=where, fix=_FIX_UP) from None
        except openai.APIConnectionError as exc:
            raise TeacherError(f"cannot reach the teacher ({exc})", where=where, fix=_FIX_UP) from None
        except openai.APIStatusError as exc:
            raise TeacherError(
                f"the teacher answered HTTP {exc.status_code}: {' '.join(str(exc.message).split())[:200]}",
                where=where,
                fix=f"check {ENV[1]} and {ENV[2]}, and the server's log",
            ) from None
        try:
            content = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if content is None:
            raise TeacherError(
                "the teacher's reply has no choices[0].message.content",
                where=where,
                fix="use an OpenAI-compatible chat-completions endpoint",
            )
        return content.strip()

    def chat(self, requests: Sequence[Request]) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, range(len(requests)), requests))


_FIX_UP = f"check {ENV[0]} and that the server is up (what was generated so far is kept: run again to go on)"


def make_teacher(kind: str, load_self: Callable[[], Any], concurrency: int = 4) -> Teacher:
    """``self`` (the model ``load_self`` loads, in process) or ``openai`` (the endpoint of the environment)."""
    if kind == "self":
        return LocalTeacher(load_self(), batch_size=concurrency)
    if kind == "openai":
        return ChatTeacher(concurrency=concurrency)
    raise TeacherError(f"unknown teacher {kind!r}", where="teacher", fix="use self or openai")
