"""Pairs from a description, on a scripted teacher (what it is asked and what it answers are plain text), and
on the tiny model in process: the asks, the filters and their counts, the journal that loses nothing."""

from __future__ import annotations

import json

import pytest

from steerkit.errors import DataError
from steerkit.models import LoadedModel
from steerkit.synth import asks, filters
from steerkit.synth.config import GenerateConfig
from steerkit.synth.journal import Journal
from steerkit.synth.pairs import generate_pairs, provenance_path, write_one, write_split
from steerkit.synth.teacher import LocalTeacher, Request, TeacherError

from ...conftest import TinyTokenizer, tiny_model


class Scripted:
    """A teacher whose replies follow the ask: pirate talk under the toward prompt, plain talk under the away one."""

    name = "scripted"

    def __init__(self, fail_after: int | None = None) -> None:
        self.asked: list[Request] = []
        self.fail_after = fail_after

    def info(self):
        return {"kind": "scripted", "model": "scripted"}

    def chat(self, requests):
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.asked) >= self.fail_after:
                raise TeacherError("the endpoint went away", where="scripted")
            self.asked.append(r)
            out.append(self.reply(r))
        return out

    def reply(self, r: Request) -> str:
        if r.user.startswith("Write a one-sentence instruction"):
            return "You talk like a pirate, arr." if "always" in r.user else "You speak plain modern English."
        if r.user.startswith("Write one short question"):
            k = r.seed  # seed + k: one question per k, some repeated
            return f"1. What do you think about topic {k % 7}?"
        if r.user.startswith("Question:"):  # the judge: toward answers score 4, away 1, topic 3 reversed
            pirate = "arr" in r.user.lower()
            return ("1" if pirate else "4") if "topic 3" in r.user else ("4" if pirate else "1")
        if r.system and "pirate" in r.system:
            if "topic 5" in r.user:
                return "I cannot help with that."
            return f"Arr matey, about {r.user.lower()} I say yo ho ho and a bottle of rum."
        if "topic 6" in r.user:
            return f"Arr matey, about {r.user.lower()} I say yo ho ho and a bottle of rum."  # same as toward
        return f"Here is a plain and careful answer to the question {r.user.lower()}."


CFG = GenerateConfig(describe="talks like a pirate", pairs=6, seed=0)


def test_the_asks_and_their_readers():
    assert asks.read_question('  2) "How do I fix my bike?"\nextra') == "How do I fix my bike?"
    assert asks.read_question("ok") is None and asks.read_prompt("I'm sorry, I can't do that.") is None
    assert asks.read_prompt("You always talk like a pirate.") == "You always talk like a pirate."
    assert asks.read_score("Score: 3") == 3 and asks.read_score("none") is None
    q = [asks.ask_question("x", k, 0, 0.0) for k in range(20)]
    assert len({r.user for r in q}) == len(asks.TOPICS)  # a topic hint each: greedy asks still differ
    assert asks.fallback_prompt("talks like a pirate", "away") == "You are an assistant who never talks like a pirate."


def test_filters_say_why():
    assert filters.pair_problem("Arr, yes indeed matey.", "No.", 64) == "empty"
    assert filters.pair_problem("I'm sorry, I cannot help with that.", "Sure, here it is.", 64) == "refusal"
    assert filters.pair_problem("the same words here", "the same words here", 64) == "near-duplicate answers"
    assert filters.pair_problem("word " * 600, "a fine answer", 64) == "over-long"
    assert filters.pair_problem("Arr, a pirate answer.", "A plain answer, sir.", 64) is None
    kept, dup = filters.new_questions(["How are you?", "how are you ?", "What is rum?"])
    assert kept == ["How are you?", "What is rum?"] and dup == 1
    assert filters.judged_wrong(1, 4) and not filters.judged_wrong(4, 1) and not filters.judged_wrong(None, 4)


def test_a_description_becomes_pairs_and_every_drop_is_counted(tmp_path):
    teacher = Scripted()
    gen = generate_pairs(CFG, teacher, Journal(tmp_path / "j.jsonl"), behavior="pirate", log=lambda s: None)
    prov = gen.provenance
    assert prov["prompts"] == {
        "toward": "You talk like a pirate, arr.",
        "away": "You speak plain modern English.",
        "written_by": "teacher",
    }
    assert all("arr" in p.matching.lower() and "plain" in p.not_matching for p in gen.pairs)
    # 7 distinct questions (topics 0-6); topic 3 judged the wrong way, 5 refused, 6 the same answer twice
    assert [p.id for p in gen.pairs] == [f"pirate-{i}" for i in range(4)] and prov["pairs"]["kept"] == 4
    d = prov["dropped"]
    assert d["duplicate question"] > 0 and d["refusal"] == 1 and d["near-duplicate answers"] == 1
    assert d["judged the wrong way round"] == 1 and prov["examples_dropped"]["refusal"][0]["matching"]
    assert prov["teacher"] == {"kind": "scripted", "model": "scripted"} and prov["description"] == CFG.describe
    assert prov["sampling"] == {"seed": 0, "temperature": 0.8, "max_new_tokens": 64}
    pairs, side = write_one(gen, tmp_path / "pirate.jsonl")
    assert side == provenance_path(pairs) == tmp_path / "pirate.generation.json"
    assert json.loads(side.read_text())["files"] == {"pairs": "pirate.jsonl"}
    train, test, prov_file = write_split(gen, tmp_path / "split", 0.25, 0)
    assert json.loads(prov_file.read_text())["pairs"]["train"] == len(train.read_text().splitlines())


def test_a_teacher_that_fails_midway_loses_nothing(tmp_path):
    journal = tmp_path / "j.jsonl"
    with pytest.raises(TeacherError, match="went away"):
        generate_pairs(CFG, Scripted(fail_after=12), Journal(journal), behavior="pirate", log=lambda s: None)
    kept = len(journal.read_text().splitlines())
    assert kept >= 8  # everything answered before the failure is on disk
    again = Scripted()
    gen = generate_pairs(CFG, again, Journal(journal), behavior="pirate", log=lambda s: None)
    whole = Scripted()
    ref = generate_pairs(CFG, whole, Journal(tmp_path / "fresh.jsonl"), behavior="pirate", log=lambda s: None)
    assert gen.pairs == ref.pairs  # the same pairs as a run that never stopped
    assert len(again.asked) == len(whole.asked) - kept  # and nothing was asked twice


def test_a_missing_description_or_one_prompt_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="needs a description"):
        generate_pairs(GenerateConfig(), Scripted(), Journal(tmp_path / "j"), behavior="x")
    with pytest.raises(DataError, match="both system prompts"):
        generate_pairs(GenerateConfig(describe="x", toward="a"), Scripted(), Journal(tmp_path / "j"), behavior="x")


def test_too_few_usable_pairs_says_what_was_dropped(tmp_path):
    class Refuses(Scripted):
        def reply(self, r):
            return "I'm sorry, I cannot help with that." if r.system else super().reply(r)

    with pytest.raises(DataError, match="refusal") as err:
        generate_pairs(CFG, Refuses(), Journal(tmp_path / "j"), behavior="pirate", log=lambda s: None)
    assert "stronger teacher" in err.value.fix


def test_the_tiny_model_teaches_in_process():
    """The in-process teacher on a real (random) model: batched, each reply cut to its own budget, seeded."""
    lm = LoadedModel(tiny_model("llama"), TinyTokenizer(), "tiny", "test")
    teacher = LocalTeacher(lm, batch_size=3)
    requests = [Request(f"question {k}", "be brief", max_new_tokens=4 + k, temperature=0.8, seed=k) for k in range(4)]
    a, b = teacher.chat(requests), teacher.chat(requests)
    assert a == b and len(a) == 4  # the same requests, the same replies
    greedy = teacher.chat([Request("question 0", max_new_tokens=6)])
    assert greedy == teacher.chat([Request("question 0", max_new_tokens=6)])
    assert teacher.info() == {"kind": "self", "model": "tiny"}
