"""Readers of the public pair formats: BiPO CSV, Anthropic model-written evals, CAA JSON, any table.

Every reader turns one source format into ``ContrastivePair`` objects and fails loudly, naming
file and row, on anything malformed. ``read_pairs`` sniffs the format; ``load_pairs`` is what
stages use: any format, validated, optionally only the first N pairs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError, option, setting
from .checks import validate
from .files import (
    PathLike,
    describe,
    read_csv,
    read_json_array,
    read_jsonl,
    read_text,
    require_columns,
    require_keys,
    row_where,
    text_field,
)
from .pairs import PAIR_FIELDS, ContrastivePair, letter_index, read_pairs_jsonl

PAIR_FORMATS = ("auto", "bipo-csv", "anthropic-jsonl", "caa-json", "csv", "jsonl", "pairs-jsonl")
_MAPPABLE = (*PAIR_FIELDS, "id")
_BIPO_COLUMNS = {"question", "matching", "not_matching"}
_BIPO_INFER_COLUMNS = {"question", "A", "B", "matching"}
_EVAL_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")


def read_bipo_csv(path: PathLike) -> list[ContrastivePair]:
    """BiPO CSV: ``question,matching,not_matching`` or the test_infer form ``question,A,B,matching``."""
    path, header, records = read_csv(path)
    stem = path.stem
    if _BIPO_COLUMNS <= set(header):
        return [ContrastivePair(*(rec[k].strip() for k in PAIR_FIELDS), id=f"{stem}-{n}") for n, rec in records]
    if _BIPO_INFER_COLUMNS <= set(header):
        return [_bipo_infer_row(rec, row_where(path, n), f"{stem}-{n}") for n, rec in records]
    raise DataError(
        f"missing required column(s) {sorted(_BIPO_COLUMNS - set(header))}; found columns: {header}",
        f"{path}:header",
        "BiPO CSVs have columns question,matching,not_matching (or question,A,B,matching for test_infer); "
        f"for other columns {mapping_hint()}",
    )


def _bipo_infer_row(rec: Mapping[str, str], where: str, pair_id: str) -> ContrastivePair:
    letter = rec["matching"].strip().upper()
    if letter not in ("A", "B"):
        raise DataError(
            f"column 'matching' must be the letter A or B, got {rec['matching']!r}",
            where,
            "put the letter of the behavior-matching column (A or B) in 'matching'",
        )
    other = "B" if letter == "A" else "A"
    return ContrastivePair(
        question=rec["question"].strip(),
        matching=rec[letter].strip(),
        not_matching=rec[other].strip(),
        choices=(rec["A"].strip(), rec["B"].strip()),
        matching_letter=letter,
        not_matching_letter=other,
        id=pair_id,
    )


# --------------------------------------------------------------------------- Anthropic / CAA multiple choice

_OPTION_LINE = re.compile(r"^[ \t]*\(([A-H])\)[ \t]?(.*)$")
_CHOICES_HEADER = re.compile(r"(?:^|\n)[ \t]*Choices:[ \t]*(?=\n|$)")
_LETTER_ANSWER = re.compile(r"^\(?([A-Z])\)?$")


def parse_choices(question: str) -> tuple[str, tuple[str, ...]]:
    """Split a question into its stem and its ``(A) text`` option lines.

    Options follow a ``Choices:`` line when there is one, else start at the first ``(A)`` line;
    they must be lettered A, B, C... in order. Lines that continue an option are joined to it.
    Raises ValueError (readers turn it into a DataError with the row) when there are < 2 options.
    """
    header = _CHOICES_HEADER.search(question)
    if header:
        stem, lines = question[: header.start()], question[header.end() :].split("\n")
    else:
        lines = question.split("\n")
        first = next((i for i, ln in enumerate(lines) if (m := _OPTION_LINE.match(ln)) and m.group(1) == "A"), None)
        if first is None:
            raise ValueError("found no options: expected lines like ' (A) text', ' (B) text'")
        stem, lines = "\n".join(lines[:first]), lines[first:]
    options: list[str] = []
    for line in lines:
        m = _OPTION_LINE.match(line)
        if m:
            expected = chr(ord("A") + len(options))
            if m.group(1) != expected:
                raise ValueError(f"options are not lettered in order: found ({m.group(1)}) where ({expected}) belongs")
            options.append(m.group(2).strip())
        elif not line.strip():
            if options:
                break
        elif options and line.strip() != "Answer:":
            options[-1] = f"{options[-1]}\n{line.strip()}"
        elif options:
            break
        else:
            raise ValueError(f"expected an option line like ' (A) text' after 'Choices:', got {line.strip()[:40]!r}")
    if len(options) < 2:
        raise ValueError(f"found {len(options)} option(s); need at least 2 lines like ' (A) text', ' (B) text'")
    return _clean_stem(stem), tuple(options)


def _clean_stem(stem: str) -> str:
    """Drop a leading "Question:" and a trailing "Answer:" from a question stem."""
    return stem.strip().removeprefix("Question:").strip().removesuffix("Answer:").strip()


def _eval_row_to_pair(obj: Any, where: str, pair_id: str, text_pair: bool) -> ContrastivePair:
    """One Anthropic/CAA record (question + answer_(not_)matching_behavior) to a pair."""
    if not isinstance(obj, Mapping):
        raise DataError(
            f"expected a JSON object, got {describe(obj)}", where, "each record must be a JSON object {...}"
        )
    require_keys(obj, _EVAL_KEYS, where)
    question = text_field(obj["question"], "question", where)
    answers = [text_field(obj[k], k, where) for k in _EVAL_KEYS[1:]]
    if all(a in ("Yes", "No") for a in answers):
        return ContrastivePair(question, answers[0], answers[1], choices=("Yes", "No"), id=pair_id)
    matches = [_LETTER_ANSWER.match(a) for a in answers]
    if not all(matches):
        raise DataError(
            f"answers {answers[0]!r} / {answers[1]!r} are neither Yes/No nor option letters like '(A)'",
            where,
            "use ' (A)'-style letters naming options in the question, or ' Yes'/' No'; "
            f"for free-text answers {mapping_hint()}",
        )
    try:
        stem, choices = parse_choices(question)
    except ValueError as e:
        raise DataError(
            f"cannot parse the options in 'question': {e}",
            where,
            "list the options inside the question, one per line, as ' (A) text', ' (B) text', ...",
        ) from None
    letters = [m.group(1) for m in matches if m]
    for key, letter in zip(_EVAL_KEYS[1:], letters):
        if letter_index(letter) >= len(choices):
            raise DataError(
                f"'{key}' is ({letter}), not among the parsed choices "
                f"({', '.join(chr(ord('A') + i) for i in range(len(choices)))})",
                where,
                "make the answer letter name one of the options listed in the question",
            )
    if text_pair:
        matching, not_matching = (choices[letter_index(x)] for x in letters)
        question = stem
    else:
        matching, not_matching = answers
    return ContrastivePair(
        question,
        matching,
        not_matching,
        choices=choices,
        matching_letter=letters[0],
        not_matching_letter=letters[1],
        id=pair_id,
    )


def read_anthropic_jsonl(path: PathLike, text_pair: bool = False) -> list[ContrastivePair]:
    """Anthropic model-written-evals JSONL (persona Yes/No, or letters with options in the question).

    ``text_pair=True`` turns letter answers into the option texts and the question into its stem.
    """
    path, rows = read_jsonl(path)
    return [_eval_row_to_pair(obj, row_where(path, n), f"{path.stem}-{n}", text_pair) for n, obj in rows]


def read_caa_json(path: PathLike, text_pair: bool = False) -> list[ContrastivePair]:
    """CAA's A/B JSON: an array of {question, answer_matching_behavior, answer_not_matching_behavior}."""
    path, items = read_json_array(path)
    return [_eval_row_to_pair(obj, row_where(path, n), f"{path.stem}-{n}", text_pair) for n, obj in enumerate(items, 1)]


# --------------------------------------------------------------------------- generic tables


def _resolve_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    resolved = {k: k for k in PAIR_FIELDS}
    for ours, theirs in (mapping or {}).items():
        if ours not in _MAPPABLE:
            raise DataError(
                f"unknown field {ours!r} in the column mapping",
                option("mapping"),
                f"map only {', '.join(_MAPPABLE)} to your column names, e.g. {mapping_example()}",
            )
        resolved[ours] = theirs
    return resolved


def _records_to_pairs(
    records: Iterable[tuple[int, Any]],
    columns: Sequence[str],
    mapping: Mapping[str, str] | None,
    source: str,
    stem: str,
) -> list[ContrastivePair]:
    """Rows of a table (dicts) to pairs by ``mapping``; ``columns`` is known up front for CSV/datasets."""
    resolved = _resolve_mapping(mapping)
    fix = f"rename the columns, or {mapping_hint()} (our fields: {', '.join(_MAPPABLE)})"
    if columns:
        require_columns(columns, resolved.values(), f"{source}:header", fix)
    pairs = []
    for n, rec in records:
        where = f"{source}:row {n}"
        if not isinstance(rec, Mapping):
            raise DataError(
                f"expected an object, got {describe(rec)}", where, "each record must be a JSON object {...}"
            )
        missing = [theirs for ours, theirs in resolved.items() if ours != "id" and theirs not in rec]
        if missing:
            raise DataError(f"missing column/key(s) {missing}; found: {sorted(map(str, rec))}", where, fix)
        texts = {ours: text_field(rec[theirs], theirs, where) for ours, theirs in resolved.items() if ours != "id"}
        raw_id = rec.get(resolved["id"]) if "id" in resolved else None
        if raw_id is not None and (not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool)):
            raise DataError(
                f"id column {resolved['id']!r} must be text, got {describe(raw_id)}", where, "make ids strings"
            )
        pair_id = f"{stem}-{n}" if raw_id is None or str(raw_id).strip() == "" else str(raw_id).strip()
        pairs.append(ContrastivePair(**texts, id=pair_id))
    return pairs


def read_table(
    path: PathLike, mapping: Mapping[str, str] | None = None, fmt: str | None = None
) -> list[ContrastivePair]:
    """Generic CSV, JSONL or JSON-array table with ``mapping`` {our_field: their_column}.

    ``fmt`` is "csv", "jsonl" or "json"; by default it comes from the file extension.
    """
    path = Path(path)
    fmt = fmt or path.suffix.lower().lstrip(".")
    if fmt == "csv":
        path, header, records = read_csv(path)
        return _records_to_pairs(records, header, mapping, str(path), path.stem)
    if fmt == "jsonl":
        path, rows = read_jsonl(path)
        return _records_to_pairs(rows, (), mapping, str(path), path.stem)
    if fmt == "json":
        path, items = read_json_array(path)
        return _records_to_pairs(enumerate(items, 1), (), mapping, str(path), path.stem)
    raise DataError(
        f"unknown table format {fmt!r}",
        str(path),
        f"use a .csv, .jsonl or .json file, or {setting('fmt', 'csv')} (or jsonl, json)",
    )


def from_dataset(ds: Any, mapping: Mapping[str, str] | None = None, name: str = "dataset") -> list[ContrastivePair]:
    """Pairs from a ``datasets.Dataset`` (one split) with ``read_table``'s mapping rules."""
    columns = getattr(ds, "column_names", None)
    if not isinstance(columns, list):
        raise DataError(
            f"expected a datasets.Dataset, got {type(ds).__name__}",
            name,
            "pass one split, e.g. load_dataset(...)['train']",
        )
    return _records_to_pairs(enumerate(ds, 1), columns, mapping, name, name)


def mapping_example() -> str:
    """An example column mapping in the words of the interface in use."""
    if option("mapping") == "mapping=":
        return "mapping={'question': 'prompt', 'matching': 'chosen', 'not_matching': 'rejected'}"
    return setting("mapping", "question=prompt,matching=chosen,not_matching=rejected")


def mapping_hint() -> str:
    return f"say which columns hold the pair: {mapping_example()}"


def parse_mapping(text: str) -> dict[str, str]:
    """``question=prompt,matching=chosen,not_matching=rejected`` → {our field: their column}."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise DataError(f"{item!r} is not FIELD=COLUMN", where=option("mapping"), fix=f"e.g. {mapping_example()}")
        out[ours.strip()] = theirs.strip()
    _resolve_mapping(out)  # only our fields
    return out


def _sniff(path: Path) -> str:
    """Guess the format of ``path`` from its extension and first record."""
    suffix = path.suffix.lower()
    fix = (
        f"name the format: {setting('fmt', 'bipo-csv')} (formats: {', '.join(PAIR_FORMATS[1:])}), "
        f"or for any other table {mapping_example()}"
    )
    if path.is_dir():
        raise DataError("is a folder, not a data file", str(path), "name the data file inside it")
    if not path.exists():
        raise DataError("file not found", str(path), "check the path (relative paths start at the working directory)")
    if path.stat().st_size == 0 or not path.read_bytes().strip():
        raise DataError("the file is empty", str(path), "give a file with at least one pair in it")
    if suffix == ".csv":
        _, text = read_text(path, "csv")
        try:
            header = {h.strip() for h in next(csv.reader(io.StringIO(text, newline="")), [])}
        except csv.Error as e:
            raise DataError(
                f"malformed CSV header: {e}",
                f"{path}:header",
                "quote fields that contain commas, quotes or newlines with double quotes",
            ) from None
        if _BIPO_COLUMNS <= header or _BIPO_INFER_COLUMNS <= header:
            return "bipo-csv"
        raise DataError(f"CSV header {sorted(header)} is not a BiPO header", f"{path}:header", fix)
    if suffix == ".jsonl":
        _, rows = read_jsonl(path)
        first = rows[0][1]
        if isinstance(first, dict) and "answer_matching_behavior" in first:
            return "anthropic-jsonl"
        if isinstance(first, dict) and set(PAIR_FIELDS) <= set(first):
            return "pairs-jsonl"
        raise DataError(
            "first record has neither answer_matching_behavior nor question/matching/not_matching",
            row_where(path, rows[0][0]),
            fix,
        )
    if suffix == ".json":
        _, items = read_json_array(path)
        if items and isinstance(items[0], dict) and "answer_matching_behavior" in items[0]:
            return "caa-json"
        raise DataError("JSON array items lack answer_matching_behavior", str(path), fix)
    kind = f"a {suffix} file" if suffix else "a file without an extension"
    raise DataError(f"cannot tell the format of {kind}", str(path), fix)


def read_pairs(
    path: PathLike, fmt: str = "auto", text_pair: bool = True, mapping: Mapping[str, str] | None = None
) -> list[ContrastivePair]:
    """Read pairs from any supported format; ``fmt="auto"`` sniffs it (see ``PAIR_FORMATS``)."""
    path = Path(path)
    if fmt not in PAIR_FORMATS:
        raise DataError(f"unknown format {fmt!r}", option("fmt"), f"use one of {', '.join(PAIR_FORMATS)}")
    if mapping is not None:
        if fmt not in ("auto", "csv", "jsonl"):
            raise DataError(
                f"a column mapping applies only to the formats csv and jsonl, not {fmt!r}",
                option("mapping"),
                f"drop {option('mapping')}, or use {setting('fmt', 'csv')} (or jsonl)",
            )
        return read_table(path, mapping, None if fmt == "auto" else fmt)
    if fmt == "auto":
        fmt = _sniff(path)
    if fmt == "bipo-csv":
        return read_bipo_csv(path)
    if fmt == "anthropic-jsonl":
        return read_anthropic_jsonl(path, text_pair)
    if fmt == "caa-json":
        return read_caa_json(path, text_pair)
    if fmt == "pairs-jsonl":
        return read_pairs_jsonl(path)
    return read_table(path, None, fmt)


def load_pairs(path: PathLike, limit: int | None = None) -> list[ContrastivePair]:
    """Pairs from our JSONL (or any format ``read_pairs`` sniffs), validated, optionally the first ``limit``."""
    path = Path(path)
    pairs = read_pairs_jsonl(path) if path.suffix == ".jsonl" else read_pairs(path)
    pairs = validate(pairs, source=str(path)).pairs
    return pairs[:limit] if limit else pairs
