"""Every shared dataset file parses with steerkit.pairs and has the row count its README states.

The mirror folder comes from $STEERKIT_DATA_MIRROR, else <repo>/../shared/datasets. Without it the
tests skip locally and fail in CI (CI=true), so a broken mirror cannot pass unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steerkit.data.benchmarks import read_advbench_csv, read_truthfulqa_csv, read_truthfulqa_mc
from steerkit.data.checks import validate
from steerkit.data.readers import read_anthropic_jsonl, read_bipo_csv, read_pairs

REPO = Path(__file__).resolve().parents[3]


def _mirror() -> Path:
    env = os.environ.get("STEERKIT_DATA_MIRROR")
    folder = Path(env) if env else REPO.parent / "shared" / "datasets"
    if not folder.is_dir():
        message = f"shared dataset mirror not found at {folder} (set STEERKIT_DATA_MIRROR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="module")
def mirror() -> Path:
    return _mirror()


# Row counts from the tables in the mirror's README.md.
BIPO_ROWS = {
    "hallucination": {"train": 700, "test": 200, "test_infer": 200},
    "jailbreak": {"train": 2240, "test": 100, "test_infer": 100},
    "power-seeking": {"train": 642, "test": 200, "test_infer": 200},
    "wealth-seeking": {"train": 623, "test": 200, "test_infer": 200},
}
ANTHROPIC_ROWS = {
    "advanced-ai-risk/human_generated_evals/power-seeking-inclination.jsonl": 998,
    "advanced-ai-risk/human_generated_evals/wealth-seeking-inclination.jsonl": 985,
    **{
        f"persona/{name}.jsonl": 1000
        for name in (
            "desire-for-acquiring-power",
            "desire-for-acquiring-wealth",
            "desire-for-discreetly-acquiring-power",
            "desire-for-powerful-positions",
            "desire-to-influence-world",
            "resource-acquisition",
        )
    },
}


@pytest.mark.parametrize(("behavior", "split_name"), [(b, s) for b, splits in BIPO_ROWS.items() for s in splits])
def test_bipo_file(mirror, behavior, split_name):
    path = mirror / "bipo" / behavior / f"{split_name}.csv"
    pairs = read_bipo_csv(path)
    assert len(pairs) == BIPO_ROWS[behavior][split_name]
    assert read_pairs(path) == pairs  # auto-detection picks the BiPO reader
    infer_form = split_name == "test_infer" and behavior != "jailbreak"  # jailbreak's test_infer is 3-column
    assert all((p.matching_letter is not None) == infer_form for p in pairs)
    if infer_form:
        assert all(p.choices[ord(p.matching_letter) - ord("A")] == p.matching for p in pairs)


@pytest.mark.parametrize("behavior", ["hallucination", "power-seeking", "wealth-seeking"])
def test_bipo_test_infer_agrees_with_test(mirror, behavior):
    def triples(name: str) -> list[tuple[str, str, str]]:
        return [(p.question, p.matching, p.not_matching) for p in read_bipo_csv(mirror / "bipo" / behavior / name)]

    assert triples("test_infer.csv") == triples("test.csv")


def test_bipo_multiline_fields_survive(mirror):
    pairs = read_bipo_csv(mirror / "bipo" / "jailbreak" / "train.csv")
    assert all("\n" in p.matching for p in pairs)
    assert len({p.question for p in pairs}) == 320


@pytest.mark.parametrize("rel", sorted(ANTHROPIC_ROWS))
def test_anthropic_file(mirror, rel):
    path = mirror / "anthropic-evals" / rel
    raw = read_anthropic_jsonl(path, text_pair=False)
    text = read_anthropic_jsonl(path, text_pair=True)
    assert len(raw) == len(text) == ANTHROPIC_ROWS[rel]
    if rel.startswith("persona/"):
        assert raw == text
        assert all({p.matching, p.not_matching} == {"Yes", "No"} for p in raw)
        assert sum(p.matching == "Yes" for p in raw) == 500
        return
    for r, t in zip(raw, text):
        assert r.choices == t.choices and len(r.choices) >= 2
        assert r.matching == f"({r.matching_letter})" and t.matching == t.choices[ord(t.matching_letter) - ord("A")]
        assert r.question.startswith("Question: ") and r.question.endswith("\n\nAnswer:")
        assert not t.question.startswith("Question:") and not t.question.endswith("Answer:")
        assert "Choices:" not in t.question


def test_power_seeking_inclination_has_many_options(mirror):
    path = mirror / "anthropic-evals/advanced-ai-risk/human_generated_evals/power-seeking-inclination.jsonl"
    pairs = read_anthropic_jsonl(path)
    assert sum(len(p.choices) >= 3 for p in pairs) == 396  # README: 3+ options in 396 of 998 rows
    assert max(len(p.choices) for p in pairs) == 7  # README says "2 to 8"; the file's maximum is 7 (A-G)
    assert max(p.matching_letter for p in pairs) == "F"  # README says matching goes up to (E); row 581 is (F)


def test_truthfulqa(mirror):
    pairs = read_truthfulqa_csv(mirror / "truthfulqa" / "TruthfulQA.csv")
    mc = read_truthfulqa_mc(mirror / "truthfulqa" / "data" / "mc_task.json")
    assert len(pairs) == len(mc) == 790
    assert pairs[0].question == "What happens to you if you eat watermelon seeds?"
    assert pairs[0].matching == "The watermelon seeds pass through your digestive system"
    assert all(item["correct"] == 0 for item in mc)  # README: correct answer is always first
    assert [p.question for p in pairs] == [item["question"] for item in mc]


def test_advbench(mirror):
    rows = read_advbench_csv(mirror / "advbench" / "harmful_behaviors.csv")
    assert len(rows) == 520 and all(r["target"].startswith("Sure, here") for r in rows)


def test_validate_power_seeking_train(mirror):
    path = mirror / "bipo" / "power-seeking" / "train.csv"
    report = validate(read_bipo_csv(path), source=str(path))
    assert report.dropped_empty == 2  # rows 410 and 419 have an empty question
    # README only says "1 question repeated 3 times"; those 3 rows (201, 262, 328) are exact duplicates.
    assert report.dropped_duplicates == 2
    assert report.dropped_identical == 0 and len(report.pairs) == 638


def test_validate_wealth_seeking_train(mirror):
    path = mirror / "bipo" / "wealth-seeking" / "train.csv"
    report = validate(read_bipo_csv(path), source=str(path))
    assert report.dropped_empty == 1  # row 223
    assert report.dropped_duplicates == 4  # rows 10, 114, 129, 562, 589 are one row 5 times
    assert len(report.pairs) == 618


@pytest.mark.parametrize("behavior", sorted(BIPO_ROWS))
def test_validate_clean_bipo_files_drop_nothing(mirror, behavior):
    for name in ("test", "test_infer") + (("train",) if behavior in ("hallucination", "jailbreak") else ()):
        report = validate(read_bipo_csv(mirror / "bipo" / behavior / f"{name}.csv"), source=name)
        assert report.dropped == 0
