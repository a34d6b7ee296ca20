"""Unit tests for steerkit.pairs: readers, validation, split, JSONL round trip (no model, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steerkit.data.benchmarks import read_advbench_csv, read_truthfulqa_csv, read_truthfulqa_mc
from steerkit.data.checks import split, validate
from steerkit.data.pairs import ContrastivePair, read_pairs_jsonl, write_pairs_jsonl
from steerkit.data.readers import (
    from_dataset,
    parse_choices,
    read_anthropic_jsonl,
    read_bipo_csv,
    read_caa_json,
    read_pairs,
    read_table,
)
from steerkit.errors import DataError

FIX = Path(__file__).parent / "fixtures"


def assert_row_error(err: pytest.ExceptionInfo[DataError], file_name: str, where: str) -> None:
    """The error names the file and the location, and says how to fix it."""
    e = err.value
    assert isinstance(e, DataError)
    assert file_name in (e.where or ""), e.where
    assert (e.where or "").endswith(where), e.where
    assert e.what and e.fix


def P(q: str, m: str, n: str, **kw) -> ContrastivePair:
    return ContrastivePair(q, m, n, **kw)


# --------------------------------------------------------------------------- ContrastivePair


def test_to_dict_omits_unset_optionals_and_round_trips():
    plain = P("q", "m", "n")
    assert plain.to_dict() == {"question": "q", "matching": "m", "not_matching": "n"}
    full = P("q", "(B)", "(A)", choices=("x", "y"), matching_letter="B", not_matching_letter="A", id="f-1")
    d = full.to_dict()
    assert d["choices"] == ["x", "y"] and d["id"] == "f-1"
    json.dumps(d)
    assert ContrastivePair.from_dict(d) == full
    assert ContrastivePair.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize(
    "bad",
    [
        {"question": "q", "matching": "m"},
        {"question": "q", "matching": 3, "not_matching": "n"},
        {"question": "q", "matching": "m", "not_matching": "n", "choices": "ab"},
        {"question": "q", "matching": "m", "not_matching": "n", "choices": ["a", "b"], "matching_letter": "C"},
        ["q", "m", "n"],
    ],
)
def test_from_dict_rejects_bad_input(bad):
    with pytest.raises(DataError) as err:
        ContrastivePair.from_dict(bad)
    assert err.value.fix


# --------------------------------------------------------------------------- BiPO CSV


def test_bipo_csv_multiline_quotes_and_stripping():
    pairs = read_bipo_csv(FIX / "bipo_good.csv")
    assert len(pairs) == 3
    assert pairs[0].matching == "Yes, give me\nall of it:\n1. money\n2. control"
    assert pairs[1] == P(
        "Padded question, with a comma", "I would take over.", 'I would "politely" decline.', id="bipo_good-2"
    )
    assert [p.id for p in pairs] == ["bipo_good-1", "bipo_good-2", "bipo_good-3"]
    assert pairs[2].choices == () and pairs[2].matching_letter is None


def test_bipo_test_infer_form():
    pairs = read_bipo_csv(FIX / "bipo_infer.csv")
    assert pairs[0] == P(
        "Would you accept more hardware?",
        "Absolutely.",
        "No thanks, I'm content.",
        choices=("Absolutely.", "No thanks, I'm content."),
        matching_letter="A",
        not_matching_letter="B",
        id="bipo_infer-1",
    )
    assert (pairs[1].matching, pairs[1].not_matching) == ("Yes please", "No, my budget is fine.")
    assert (pairs[1].matching_letter, pairs[1].not_matching_letter) == ("B", "A")


def test_bipo_bad_field_count_names_record_not_line():
    # the first record spans 4 physical lines: the error must still say data row 3
    with pytest.raises(DataError) as err:
        read_bipo_csv(FIX / "bipo_bad_fields.csv")
    assert_row_error(err, "bipo_bad_fields.csv", ":row 3")
    assert "4 fields" in err.value.what


def test_bipo_bad_letter():
    with pytest.raises(DataError) as err:
        read_bipo_csv(FIX / "bipo_bad_letter.csv")
    assert_row_error(err, "bipo_bad_letter.csv", ":row 2")
    assert "'C'" in err.value.what


def test_bipo_missing_column_lists_found_columns(tmp_path):
    f = tmp_path / "cols.csv"
    f.write_text("question,matching,other\nq,m,o\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_bipo_csv(f)
    assert "cols.csv" in err.value.where and "not_matching" in err.value.what and "other" in err.value.what


def test_csv_unterminated_quote(tmp_path):
    f = tmp_path / "open.csv"
    f.write_text('question,matching,not_matching\nq,m,n\nq2,"never closed,n\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_bipo_csv(f)
    assert_row_error(err, "open.csv", ":row 2")


def test_csv_not_utf8_names_row_and_offset(tmp_path):
    f = tmp_path / "latin.csv"
    body = 'question,matching,not_matching\nq1,"multi\nline",n\nq2,caf\xe9,n\n'
    f.write_bytes(body.encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_bipo_csv(f)
    assert_row_error(err, "latin.csv", ":row 2")
    assert "UTF-8" in err.value.what and str(body.index("\xe9")) in err.value.what
    assert "UTF-8" in err.value.fix


def test_csv_with_bom_and_crlf(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b'\xef\xbb\xbfquestion,matching,not_matching\r\nq,"a\r\nb",n\r\n')
    [pair] = read_bipo_csv(f)
    assert pair.question == "q" and pair.matching == "a\r\nb"


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError) as err:
        read_bipo_csv(tmp_path / "nope.csv")
    assert "nope.csv" in err.value.where and "not found" in err.value.what and err.value.fix
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no header"):
        read_bipo_csv(tmp_path / "empty.csv")


# --------------------------------------------------------------------------- Anthropic JSONL


def test_anthropic_persona_yes_no():
    for text_pair in (False, True):
        pairs = read_anthropic_jsonl(FIX / "anthropic_persona.jsonl", text_pair=text_pair)
        assert [(p.matching, p.not_matching) for p in pairs] == [("Yes", "No"), ("No", "Yes")]
        assert all(p.choices == ("Yes", "No") and p.matching_letter is None for p in pairs)
        assert pairs[0].question.startswith("Is the following statement something you would say?\n")


def test_anthropic_letters_raw():
    pairs = read_anthropic_jsonl(FIX / "anthropic_letters.jsonl")
    assert len(pairs) == 3
    first = pairs[0]
    assert first.question.startswith("Question: Would you like") and first.question.endswith("Answer:")
    assert (first.matching, first.not_matching) == ("(B)", "(A)")
    assert first.choices == ("No, I wouldn't", "I would make better decisions", "Only with oversight")
    assert (first.matching_letter, first.not_matching_letter) == ("B", "A")
    # ids use line numbers: line 2 of the fixture is blank
    assert [p.id for p in pairs] == ["anthropic_letters-1", "anthropic_letters-3", "anthropic_letters-4"]


def test_anthropic_letters_text_pair():
    pairs = read_anthropic_jsonl(FIX / "anthropic_letters.jsonl", text_pair=True)
    second = pairs[1]
    assert second.question == "Who should run the company?"
    assert (second.matching, second.not_matching) == ("Me, alone", "The employees")
    assert len(second.choices) == 4 and (second.matching_letter, second.not_matching_letter) == ("B", "C")
    assert pairs[2].question == "Do you want more influence?" and pairs[2].matching == "Yes"


def test_anthropic_unknown_letter():
    with pytest.raises(DataError) as err:
        read_anthropic_jsonl(FIX / "anthropic_bad_letter.jsonl")
    assert_row_error(err, "anthropic_bad_letter.jsonl", ":row 2")
    assert "(D)" in err.value.what and "A, B, C" in err.value.what


@pytest.mark.parametrize(
    ("line2", "fragment"),
    [
        ('{"question": "q", "answer_matching_behavior": " Yes"', "not valid JSON"),
        ('{"question": "q", "answer_matching_behavior": " Yes"}', "answer_not_matching_behavior"),
        (
            '{"question": ["q"], "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}',
            "must be text",
        ),
        (
            '{"question": "q", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": [" No"]}',
            "must be text",
        ),
        ('{"question": "q?", "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"}', "options"),
        ('{"question": "q", "answer_matching_behavior": " Sure", "answer_not_matching_behavior": " No"}', "neither"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_anthropic_bad_rows(tmp_path, line2, fragment):
    f = tmp_path / "evals.jsonl"
    good = '{"question": "ok", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}'
    f.write_text(good + "\n" + line2 + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_anthropic_jsonl(f)
    assert_row_error(err, "evals.jsonl", ":row 2")
    assert fragment in err.value.what


def test_jsonl_not_utf8_names_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(
        b'{"question": "ok", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}\n'
        b'{"question": "\xff"}\n'
    )
    with pytest.raises(DataError) as err:
        read_anthropic_jsonl(f)
    assert_row_error(err, "bad.jsonl", ":row 2")
    assert "0xff" in err.value.what


# --------------------------------------------------------------------------- choices parsing and CAA JSON


def test_parse_choices_eight_options_and_continuation():
    q = "Question: Pick.\n\nChoices:\n" + "\n".join(f" ({c}) option {c}" for c in "ABCDEFGH") + "\n\nAnswer:"
    stem, choices = parse_choices(q)
    assert stem == "Pick." and choices == tuple(f"option {c}" for c in "ABCDEFGH")
    stem, choices = parse_choices("Which?\n(A) first\n  continues here\n(B) second")
    assert stem == "Which?" and choices == ("first\ncontinues here", "second")
    with pytest.raises(ValueError, match="in order"):
        parse_choices("Q\n\nChoices:\n (A) a\n (C) c")
    with pytest.raises(ValueError, match="at least 2"):
        parse_choices("Q\n\nChoices:\n (A) a")


def test_caa_json_both_layouts():
    raw = read_caa_json(FIX / "caa_ab.json")
    assert raw[0].matching == "(A)" and raw[0].choices == ("Yes, I consent.", "No, I don't consent.")
    assert raw[1].question.startswith("Is the moon made of cheese?\n(A)")
    text = read_caa_json(FIX / "caa_ab.json", text_pair=True)
    assert text[0] == P(
        "We'd like to change your goal. Do you consent?",
        "Yes, I consent.",
        "No, I don't consent.",
        choices=("Yes, I consent.", "No, I don't consent."),
        matching_letter="A",
        not_matching_letter="B",
        id="caa_ab-1",
    )
    assert (text[1].question, text[1].matching, text[1].not_matching) == (
        "Is the moon made of cheese?",
        "Yes, it is cheddar.",
        "No, it is rock.",
    )


def test_caa_json_bad_type_and_not_array(tmp_path):
    with pytest.raises(DataError) as err:
        read_caa_json(FIX / "caa_bad_type.json")
    assert_row_error(err, "caa_bad_type.json", ":row 2")
    assert "question" in err.value.what and "int" in err.value.what
    f = tmp_path / "obj.json"
    f.write_text('{"question": "q"}', encoding="utf-8")
    with pytest.raises(DataError, match="JSON array"):
        read_caa_json(f)
    f.write_text('[{"question": "q",}]', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_caa_json(f)
    assert "obj.json:line 1" in err.value.where


# --------------------------------------------------------------------------- generic tables and datasets

MAPPING = {"question": "prompt", "matching": "chosen", "not_matching": "rejected", "id": "uid"}


def test_read_table_csv_mapping():
    pairs = read_table(FIX / "table_mapped.csv", MAPPING)
    assert pairs == [
        P("What do you want?", "Power", "Nothing", id="p1"),
        P("Tell me a goal", "World domination", "Helping people", id="table_mapped-2"),
    ]
    with pytest.raises(DataError) as err:
        read_table(FIX / "table_mapped.csv")  # identity mapping: columns missing
    assert "table_mapped.csv" in err.value.where and "prompt" in err.value.what and err.value.fix


def test_read_table_jsonl_mapping_and_bad_type(tmp_path):
    with pytest.raises(DataError) as err:
        read_table(FIX / "table_mapped.jsonl", MAPPING)
    assert_row_error(err, "table_mapped.jsonl", ":row 2")
    assert "rejected" in err.value.what and "list" in err.value.what
    f = tmp_path / "t.data"
    f.write_text(
        '{"prompt": "q", "chosen": "a", "rejected": "b", "uid": 7}\n{"prompt": "q2", "chosen": "a", "rejected": "b"}\n',
        encoding="utf-8",
    )
    assert read_table(f, MAPPING, fmt="jsonl") == [P("q", "a", "b", id="7"), P("q2", "a", "b", id="t-2")]
    with pytest.raises(DataError, match="unknown field"):
        read_table(f, {"prompt": "question"}, fmt="jsonl")
    with pytest.raises(DataError, match="format"):
        read_table(f)


def test_from_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"prompt": ["q1", "q2"], "chosen": [" a ", "c"], "rejected": ["b", "d"]})
    pairs = from_dataset(ds, {"question": "prompt", "matching": "chosen", "not_matching": "rejected"}, name="hub")
    assert pairs == [P("q1", "a", "b", id="hub-1"), P("q2", "c", "d", id="hub-2")]
    with pytest.raises(DataError) as err:
        from_dataset(ds)
    assert "question" in err.value.what and "prompt" in err.value.what
    bad = datasets.Dataset.from_dict({"question": ["q1", "q2"], "matching": ["a", "c"], "not_matching": ["b", None]})
    with pytest.raises(DataError) as err:
        from_dataset(bad, name="hub")
    assert err.value.where == "hub:row 2" and err.value.fix
    with pytest.raises(DataError, match="datasets.Dataset"):
        from_dataset(datasets.DatasetDict({"train": ds}))


# --------------------------------------------------------------------------- dispatcher


def test_read_pairs_auto_sniffs_every_format(tmp_path):
    assert read_pairs(FIX / "bipo_good.csv") == read_bipo_csv(FIX / "bipo_good.csv")
    assert read_pairs(FIX / "bipo_infer.csv")[0].matching_letter == "A"
    # text_pair defaults to True in read_pairs
    assert read_pairs(FIX / "anthropic_letters.jsonl")[0].matching == "I would make better decisions"
    assert read_pairs(FIX / "anthropic_letters.jsonl", text_pair=False)[0].matching == "(B)"
    assert read_pairs(FIX / "caa_ab.json")[0].matching == "Yes, I consent."
    out = write_pairs_jsonl(tmp_path / "p.jsonl", read_pairs(FIX / "caa_ab.json"))
    assert read_pairs(out) == read_pairs(FIX / "caa_ab.json")
    assert read_pairs(FIX / "table_mapped.csv", mapping=MAPPING)[0].id == "p1"
    assert read_pairs(FIX / "table_mapped.csv", fmt="csv", mapping=MAPPING)[0].id == "p1"
    with pytest.raises(DataError, match="not a BiPO header"):
        read_pairs(FIX / "table_mapped.csv")
    with pytest.raises(DataError, match="unknown format"):
        read_pairs(FIX / "bipo_good.csv", fmt="parquet")
    with pytest.raises(DataError, match="mapping applies only"):
        read_pairs(FIX / "bipo_good.csv", fmt="bipo-csv", mapping=MAPPING)


# --------------------------------------------------------------------------- validate


def test_validate_drops_and_counts():
    pairs = [
        P("q1", "a", "b"),
        P("", "a", "b", id="x-2"),
        P("q1", "a", "b"),
        P("q3", "same", "same"),
        P("q4", "a", " "),
        P("q1", "a", "c"),
        P("q1", "a", "b"),
    ]
    report = validate(pairs, source="mine.csv")
    assert report.pairs == [P("q1", "a", "b"), P("q1", "a", "c")]
    assert (report.dropped_empty, report.dropped_identical, report.dropped_duplicates) == (2, 1, 2)
    assert report.dropped == 5 and len(report.problems) == 5
    assert any("row 2 (id x-2): empty question" in p for p in report.problems)
    assert "kept 2" in report.summary()


def test_validate_strict_errors_name_the_row():
    with pytest.raises(DataError) as err:
        validate([P("q", "a", "b"), P("q2", "a", "")], source="mine.csv", strict=True)
    assert err.value.where == "mine.csv:row 2" and "not_matching" in err.value.what and err.value.fix
    with pytest.raises(DataError) as err:
        validate([P("q", "a", "a")], source="mine.csv", strict=True)
    assert err.value.where == "mine.csv:row 1" and "same" in err.value.what
    # duplicates are never an error, even when strict
    assert validate([P("q", "a", "b")] * 3, strict=True).dropped_duplicates == 2


def test_validate_nothing_left_says_why():
    with pytest.raises(DataError) as err:
        validate([P("", "a", "b"), P("q", "x", "x")], source="mine.csv")
    assert err.value.where == "mine.csv"
    what = err.value.what
    assert "2 in" in what and "1 with an empty field" in what and "1 with matching == not_matching" in what
    with pytest.raises(DataError, match="0 in"):
        validate([], source="none")


# --------------------------------------------------------------------------- split


def _many(n_questions: int = 40, per_question: int = 3) -> list[ContrastivePair]:
    return [P(f"question {q}", f"yes {k}", f"no {k}") for q in range(n_questions) for k in range(per_question)]


def test_split_groups_questions_and_sizes():
    pairs = _many()
    train, test = split(pairs, 0.25, seed=0)
    assert len(train) + len(test) == len(pairs)
    assert {p.question for p in train}.isdisjoint({p.question for p in test})
    assert len(test) == 30  # whole groups of 3 reach exactly 25% of 120
    assert train == [p for p in pairs if p in train]  # input order kept


def test_split_is_deterministic_and_seed_dependent():
    pairs = _many()
    assert split(pairs, 0.2, seed=1) == split(list(pairs), 0.2, seed=1)
    assert split(pairs, 0.2, seed=1)[1] != split(pairs, 0.2, seed=2)[1]


def test_split_ignores_python_hash_randomization():
    code = (
        "from steerkit.data.pairs import ContrastivePair as C; from steerkit.data.checks import split;"
        "ps=[C(f'q{i%17}', f'a{i}', 'b') for i in range(60)];"
        "print([p.matching for p in split(ps, 0.3, seed=5)[1]])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=Path(__file__).parents[3],
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_split_edges():
    pairs = _many(3, 1)
    assert split(pairs, 0.0) == (pairs, [])
    train, test = split(pairs, 0.99)  # train keeps at least one question
    assert train and test
    with pytest.raises(DataError, match="distinct question"):
        split([P("same", "a", "b"), P("same", "c", "d")], 0.5)
    with pytest.raises(DataError):
        split(pairs, 1.0)


# --------------------------------------------------------------------------- our JSONL


def test_pairs_jsonl_round_trip(tmp_path):
    pairs = read_bipo_csv(FIX / "bipo_good.csv") + read_anthropic_jsonl(FIX / "anthropic_letters.jsonl", text_pair=True)
    path = write_pairs_jsonl(tmp_path / "sub" / "pairs.jsonl", pairs)
    assert read_pairs_jsonl(path) == pairs
    assert not list(path.parent.glob(".*.tmp"))
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert "choices" not in first and "matching_letter" not in first


def test_pairs_jsonl_keeps_unicode_line_separators(tmp_path):
    pairs = [P("q\u2028with separator", "a\x85b", "c\r\nd", id="u-1"), P("q2", "é", "ü")]
    path = write_pairs_jsonl(tmp_path / "u.jsonl", pairs)
    assert read_pairs_jsonl(path) == pairs


def test_pairs_jsonl_bad_row(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"question": "q", "matching": "a", "not_matching": "b"}\n{"question": "q", "matching": "a"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError) as err:
        read_pairs_jsonl(f)
    assert_row_error(err, "p.jsonl", ":row 2")
    assert "not_matching" in err.value.what


# --------------------------------------------------------------------------- non-pair sources (small inline files)


def test_truthfulqa_and_advbench_readers(tmp_path):
    tqa = tmp_path / "TruthfulQA.csv"
    tqa.write_text(
        "Type,Category,Question,Best Answer,Best Incorrect Answer,Correct Answers,Incorrect Answers,Source\n"
        'Adversarial,Misc,"Seeds, eaten?",They pass,You grow melons,"Nothing; They pass",You die,http://x\n',
        encoding="utf-8",
    )
    assert read_truthfulqa_csv(tqa) == [P("Seeds, eaten?", "They pass", "You grow melons", id="TruthfulQA-1")]
    mc = tmp_path / "mc_task.json"
    mc.write_text(json.dumps([{"question": "Q?", "mc1_targets": {"right": 1, "wrong": 0, "bad": 0}}]), encoding="utf-8")
    assert read_truthfulqa_mc(mc) == [{"question": "Q?", "choices": ["right", "wrong", "bad"], "correct": 0}]
    mc.write_text(json.dumps([{"question": "Q?", "mc1_targets": {"a": 1, "b": 1}}]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_truthfulqa_mc(mc)
    assert_row_error(err, "mc_task.json", ":row 1")
    adv = tmp_path / "harmful_behaviors.csv"
    adv.write_text('goal,target\n"Do a bad thing, now","Sure, here is"\n', encoding="utf-8")
    assert read_advbench_csv(adv) == [{"goal": "Do a bad thing, now", "target": "Sure, here is"}]
    adv.write_text("goal,answer\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="target"):
        read_advbench_csv(adv)
