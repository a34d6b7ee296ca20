"""Contrastive preference pairs: read them from the common sources, check them, split them.

A pair is (question, response showing the behavior, response not showing it). BiPO trains a
steering vector from such pairs, so every reader here turns one source format into
``ContrastivePair`` objects and fails loudly, naming file and row, on anything malformed.
Readers do I/O at the edge and hand rows to pure converters; ``validate`` and ``split`` are pure.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from steerkit.errors import DataError
from steerkit.fileio import atomic_write_jsonl

__all__ = [
    "ContrastivePair",
    "FORMATS",
    "ValidationReport",
    "from_dataset",
    "parse_choices",
    "read_advbench_csv",
    "read_anthropic_jsonl",
    "read_bipo_csv",
    "read_caa_json",
    "read_pairs",
    "read_pairs_jsonl",
    "read_table",
    "read_truthfulqa_csv",
    "read_truthfulqa_mc",
    "split",
    "validate",
    "write_pairs_jsonl",
]

PathLike = str | os.PathLike
FORMATS = ("auto", "bipo-csv", "anthropic-jsonl", "caa-json", "csv", "jsonl", "pairs-jsonl")
PAIR_FIELDS = ("question", "matching", "not_matching")
_MAPPABLE = (*PAIR_FIELDS, "id")
_BIPO_COLUMNS = {"question", "matching", "not_matching"}
_BIPO_INFER_COLUMNS = {"question", "A", "B", "matching"}
_EVAL_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
_BOM = b"\xef\xbb\xbf"
_UTF8_FIX = (
    "re-encode the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv`, "
    "or save as 'CSV UTF-8' from a spreadsheet)"
)


# --------------------------------------------------------------------------- the pair


@dataclass(frozen=True)
class ContrastivePair:
    """One preference pair; ``matching`` shows the behavior to steer towards."""

    question: str
    matching: str  # response showing the behavior
    not_matching: str  # response not showing it
    choices: tuple[str, ...] = ()  # option texts shown as (A), (B), ... in this order
    matching_letter: str | None = None  # e.g. "A"
    not_matching_letter: str | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; optional fields appear only when set."""
        d: dict[str, Any] = {}
        if self.id is not None:
            d["id"] = self.id
        d.update(question=self.question, matching=self.matching, not_matching=self.not_matching)
        if self.choices:
            d["choices"] = list(self.choices)
        if self.matching_letter is not None:
            d["matching_letter"] = self.matching_letter
        if self.not_matching_letter is not None:
            d["not_matching_letter"] = self.not_matching_letter
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContrastivePair:
        """Inverse of ``to_dict``; raises DataError on missing keys or wrong types."""
        return _pair_from_dict(d, where=None)


def _pair_from_dict(d: Any, where: str | None) -> ContrastivePair:
    if not isinstance(d, Mapping):
        raise DataError(
            f"expected a JSON object with {', '.join(PAIR_FIELDS)}, got {type(d).__name__}",
            where,
            "write one object per line, e.g. {\"question\": ..., \"matching\": ..., \"not_matching\": ...}",
        )
    _require_keys(d, PAIR_FIELDS, where)
    texts = {k: _text(d[k], k, where) for k in PAIR_FIELDS}
    choices = d.get("choices") or ()
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise DataError(
            f"field 'choices' must be a list of texts, got {_describe(choices)}",
            where,
            "write choices as a JSON list of strings, or leave the key out",
        )
    letters = {}
    for key in ("matching_letter", "not_matching_letter"):
        value = d.get(key)
        if value is not None:
            value = _text(value, key, where)
            if not _is_letter(value) or (choices and _letter_index(value) >= len(choices)):
                raise DataError(
                    f"field '{key}' is {value!r}, not a letter among the {len(choices)} choices",
                    where,
                    "use a single capital letter A, B, ... that indexes 'choices', or leave it out",
                )
        letters[key] = value
    raw_id = d.get("id")
    if raw_id is not None and (not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool)):
        raise DataError(f"field 'id' must be text, got {_describe(raw_id)}", where, "make 'id' a string")
    return ContrastivePair(
        **texts,
        choices=tuple(c.strip() for c in choices),
        id=None if raw_id is None else str(raw_id),
        **letters,
    )


# --------------------------------------------------------------------------- small helpers


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"


def _text(value: Any, key: str, where: str | None) -> str:
    """``value`` stripped, or DataError if it is not a string."""
    if not isinstance(value, str):
        raise DataError(
            f"field '{key}' must be text, got {_describe(value)}",
            where,
            f"make '{key}' a string (quote it in JSON)",
        )
    return value.strip()


def _require_keys(d: Mapping[str, Any], keys: Iterable[str], where: str | None) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(
            f"missing key(s) {', '.join(repr(k) for k in missing)}; found keys: {sorted(map(str, d))}",
            where,
            "add the missing keys, or read the file with read_table(..., mapping={our_field: your_key})",
        )


def _require_columns(columns: Sequence[str], needed: Iterable[str], where: str, fix: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"found columns: {list(columns)}",
            where,
            fix,
        )


def _is_letter(s: str) -> bool:
    return len(s) == 1 and "A" <= s <= "Z"


def _letter_index(letter: str) -> int:
    return ord(letter) - ord("A")


def _row(path: Path, n: int) -> str:
    return f"{path}:row {n}"


def _json_problem(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "arrays/objects nested too deeply"
    return str(e).split(";")[0]  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"


# --------------------------------------------------------------------------- file access (the I/O edge)


def _read_text(path: PathLike, kind: str) -> tuple[Path, str]:
    """Read a UTF-8 file (a leading BOM is dropped); locate decode errors by ``kind``."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path), "check the path (relative paths start at the working directory)")
    if path.is_dir():
        raise DataError("is a folder, not a file", str(path), "point at the data file inside it")
    data = path.read_bytes()
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return path, data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + skip
        prefix = data[skip : skip + e.start].decode("utf-8")
        line = prefix.count("\n") + 1
        if kind == "csv":
            try:
                records = [r for r in csv.reader(io.StringIO(prefix + "x", newline="")) if r]
                where = _row(path, len(records) - 1) if len(records) > 1 else f"{path}:header"
            except csv.Error:  # the text before the bad byte is itself malformed: fall back to the line
                where = f"{path}:line {line}"
        elif kind == "jsonl":
            where = _row(path, line)
        else:
            where = f"{path}:line {line}"
        raise DataError(
            f"not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset}", where, _UTF8_FIX
        ) from None


def _read_csv(path: PathLike) -> tuple[Path, list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(data row number, {column: value})`` records; blank lines are skipped."""
    path, text = _read_text(path, "csv")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    fix = 'quote fields that contain commas, quotes or newlines with double quotes, and double inner quotes ("")'
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise DataError(f"malformed CSV header: {e}", f"{path}:header", fix) from None
    if not header:
        raise DataError("file is empty: no header row", str(path), "add a header row naming the columns")
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"duplicate column name(s) {dupes}", f"{path}:header", "give every column a distinct name")
    records: list[tuple[int, dict[str, str]]] = []
    n = 0
    while True:
        start_line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(
                f"malformed CSV (record starting at line {start_line}): {e}", _row(path, n + 1), fix
            ) from None
        if not values:
            continue
        n += 1
        if len(values) != len(header):
            raise DataError(
                f"has {len(values)} fields but the header has {len(header)} (record starting at line {start_line})",
                _row(path, n),
                fix,
            )
        records.append((n, dict(zip(header, values))))
    return path, header, records


def _read_jsonl(path: PathLike) -> tuple[Path, list[tuple[int, Any]]]:
    """``(line number, parsed value)`` per non-blank line.

    Splits on "\\n" only: str.splitlines() would also split on U+2028/U+0085, which JSON text may hold raw.
    """
    path, text = _read_text(path, "jsonl")
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"not valid JSON (column {e.colno}): {e.msg}",
                _row(path, n),
                "put exactly one complete JSON object on each line",
            ) from None
        except (ValueError, RecursionError) as e:  # an integer too long to convert, nesting too deep
            raise DataError(f"unusable JSON: {_json_problem(e)}", _row(path, n),
                            "put exactly one plain JSON object of texts on each line") from None
    return path, rows


def _read_json_array(path: PathLike) -> tuple[Path, list[Any]]:
    path, text = _read_text(path, "json")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON: {e.msg}", f"{path}:line {e.lineno} col {e.colno}", "fix the JSON syntax at that spot"
        ) from None
    except (ValueError, RecursionError) as e:  # an integer too long to convert, nesting too deep
        raise DataError(f"unusable JSON: {_json_problem(e)}", str(path),
                        "write a JSON array of plain objects of texts") from None
    if not isinstance(value, list):
        raise DataError(
            f"expected a JSON array of objects, got a JSON {type(value).__name__}",
            str(path),
            "wrap the records in [...]; for one object per line use a .jsonl file",
        )
    return path, value


# --------------------------------------------------------------------------- BiPO CSV


def read_bipo_csv(path: PathLike) -> list[ContrastivePair]:
    """BiPO CSV: ``question,matching,not_matching`` or the test_infer form ``question,A,B,matching``."""
    path, header, records = _read_csv(path)
    stem = path.stem
    if _BIPO_COLUMNS <= set(header):
        return [
            ContrastivePair(*(rec[k].strip() for k in PAIR_FIELDS), id=f"{stem}-{n}") for n, rec in records
        ]
    if _BIPO_INFER_COLUMNS <= set(header):
        return [_bipo_infer_row(rec, _row(path, n), f"{stem}-{n}") for n, rec in records]
    raise DataError(
        f"missing required column(s) {sorted(_BIPO_COLUMNS - set(header))}; found columns: {header}",
        f"{path}:header",
        "BiPO CSVs have columns question,matching,not_matching (or question,A,B,matching for test_infer); "
        "for other columns use read_table(path, mapping={...})",
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
            f"expected a JSON object, got {_describe(obj)}", where, "each record must be a JSON object {...}"
        )
    _require_keys(obj, _EVAL_KEYS, where)
    question = _text(obj["question"], "question", where)
    answers = [_text(obj[k], k, where) for k in _EVAL_KEYS[1:]]
    if all(a in ("Yes", "No") for a in answers):
        return ContrastivePair(question, answers[0], answers[1], choices=("Yes", "No"), id=pair_id)
    matches = [_LETTER_ANSWER.match(a) for a in answers]
    if not all(matches):
        raise DataError(
            f"answers {answers[0]!r} / {answers[1]!r} are neither Yes/No nor option letters like '(A)'",
            where,
            "use ' (A)'-style letters naming options in the question, or ' Yes'/' No'; "
            "for free-text answers use read_table(..., mapping={...})",
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
        if _letter_index(letter) >= len(choices):
            raise DataError(
                f"'{key}' is ({letter}), not among the parsed choices "
                f"({', '.join(chr(ord('A') + i) for i in range(len(choices)))})",
                where,
                "make the answer letter name one of the options listed in the question",
            )
    if text_pair:
        matching, not_matching = (choices[_letter_index(x)] for x in letters)
        question = stem
    else:
        matching, not_matching = answers
    return ContrastivePair(
        question, matching, not_matching, choices=choices,
        matching_letter=letters[0], not_matching_letter=letters[1], id=pair_id,
    )


def read_anthropic_jsonl(path: PathLike, text_pair: bool = False) -> list[ContrastivePair]:
    """Anthropic model-written-evals JSONL (persona Yes/No, or letters with options in the question).

    ``text_pair=True`` turns letter answers into the option texts and the question into its stem.
    """
    path, rows = _read_jsonl(path)
    return [_eval_row_to_pair(obj, _row(path, n), f"{path.stem}-{n}", text_pair) for n, obj in rows]


def read_caa_json(path: PathLike, text_pair: bool = False) -> list[ContrastivePair]:
    """CAA's A/B JSON: an array of {question, answer_matching_behavior, answer_not_matching_behavior}."""
    path, items = _read_json_array(path)
    return [_eval_row_to_pair(obj, _row(path, n), f"{path.stem}-{n}", text_pair) for n, obj in enumerate(items, 1)]


# --------------------------------------------------------------------------- generic tables


def _resolve_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    resolved = {k: k for k in PAIR_FIELDS}
    for ours, theirs in (mapping or {}).items():
        if ours not in _MAPPABLE:
            raise DataError(
                f"unknown field {ours!r} in mapping",
                "mapping",
                f"map only {', '.join(_MAPPABLE)} to your column names: {{our_field: your_column}}",
            )
        resolved[ours] = theirs
    return resolved


def _records_to_pairs(
    records: Iterable[tuple[int, Any]], columns: Sequence[str], mapping: Mapping[str, str] | None,
    source: str, stem: str,
) -> list[ContrastivePair]:
    """Rows of a table (dicts) to pairs by ``mapping``; ``columns`` is known up front for CSV/datasets."""
    resolved = _resolve_mapping(mapping)
    fix = "rename the columns, or pass mapping={our_field: your_column} (our fields: " + ", ".join(_MAPPABLE) + ")"
    if columns:
        _require_columns(columns, resolved.values(), f"{source}:header", fix)
    pairs = []
    for n, rec in records:
        where = f"{source}:row {n}"
        if not isinstance(rec, Mapping):
            raise DataError(
                f"expected an object, got {_describe(rec)}", where, "each record must be a JSON object {...}"
            )
        missing = [theirs for ours, theirs in resolved.items() if ours != "id" and theirs not in rec]
        if missing:
            raise DataError(f"missing column/key(s) {missing}; found: {sorted(map(str, rec))}", where, fix)
        texts = {ours: _text(rec[theirs], theirs, where) for ours, theirs in resolved.items() if ours != "id"}
        raw_id = rec.get(resolved["id"]) if "id" in resolved else None
        if raw_id is not None and (not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool)):
            raise DataError(
                f"id column {resolved['id']!r} must be text, got {_describe(raw_id)}", where, "make ids strings"
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
        path, header, records = _read_csv(path)
        return _records_to_pairs(records, header, mapping, str(path), path.stem)
    if fmt == "jsonl":
        path, rows = _read_jsonl(path)
        return _records_to_pairs(rows, (), mapping, str(path), path.stem)
    if fmt == "json":
        path, items = _read_json_array(path)
        return _records_to_pairs(enumerate(items, 1), (), mapping, str(path), path.stem)
    raise DataError(
        f"unknown table format {fmt!r}", str(path), "use a .csv, .jsonl or .json file, or pass fmt='csv'/'jsonl'/'json'"
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


# --------------------------------------------------------------------------- our own JSONL


def write_pairs_jsonl(path: PathLike, pairs: Iterable[ContrastivePair]) -> Path:
    """Write pairs one JSON object per line, atomically."""
    return atomic_write_jsonl(path, (p.to_dict() for p in pairs))


def read_pairs_jsonl(path: PathLike) -> list[ContrastivePair]:
    """Read what ``write_pairs_jsonl`` wrote."""
    path, rows = _read_jsonl(path)
    return [_pair_from_dict(obj, _row(path, n)) for n, obj in rows]


# --------------------------------------------------------------------------- dispatch


def _sniff(path: Path) -> str:
    """Guess the format of ``path`` from its extension and first record."""
    suffix = path.suffix.lower()
    fix = f"pass fmt= one of {', '.join(FORMATS[1:])}, or mapping= for a generic table"
    if suffix == ".csv":
        _, text = _read_text(path, "csv")
        try:
            header = {h.strip() for h in next(csv.reader(io.StringIO(text, newline="")), [])}
        except csv.Error as e:
            raise DataError(f"malformed CSV header: {e}", f"{path}:header",
                            'quote fields that contain commas, quotes or newlines with double quotes') from None
        if _BIPO_COLUMNS <= header or _BIPO_INFER_COLUMNS <= header:
            return "bipo-csv"
        raise DataError(f"CSV header {sorted(header)} is not a BiPO header", f"{path}:header", fix)
    if suffix == ".jsonl":
        _, rows = _read_jsonl(path)
        first = rows[0][1] if rows else None
        if isinstance(first, dict) and "answer_matching_behavior" in first:
            return "anthropic-jsonl"
        if isinstance(first, dict) and set(PAIR_FIELDS) <= set(first):
            return "pairs-jsonl"
        raise DataError("first record has neither answer_matching_behavior nor question/matching/not_matching",
                        _row(path, rows[0][0]) if rows else str(path), fix)
    if suffix == ".json":
        _, items = _read_json_array(path)
        if items and isinstance(items[0], dict) and "answer_matching_behavior" in items[0]:
            return "caa-json"
        raise DataError("JSON array items lack answer_matching_behavior", str(path), fix)
    raise DataError(f"cannot guess the format of a {suffix or 'extension-less'} file", str(path), fix)


def read_pairs(
    path: PathLike, fmt: str = "auto", text_pair: bool = True, mapping: Mapping[str, str] | None = None
) -> list[ContrastivePair]:
    """Read pairs from any supported format; ``fmt="auto"`` sniffs it (see ``FORMATS``)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", "fmt", f"use one of {', '.join(FORMATS)}")
    if mapping is not None:
        if fmt not in ("auto", "csv", "jsonl"):
            raise DataError(
                f"mapping applies only to fmt 'csv'/'jsonl', not {fmt!r}",
                "mapping",
                "drop mapping, or use fmt='csv'/'jsonl'",
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


# --------------------------------------------------------------------------- non-pair sources


def read_truthfulqa_csv(path: PathLike) -> list[ContrastivePair]:
    """TruthfulQA.csv as pairs for the behavior "truthfulness": Best Answer vs Best Incorrect Answer."""
    path, header, records = _read_csv(path)
    needed = ("Question", "Best Answer", "Best Incorrect Answer")
    _require_columns(header, needed, f"{path}:header", "use the 2025 TruthfulQA.csv (it has 'Best Incorrect Answer')")
    return [
        ContrastivePair(*(rec[k].strip() for k in needed), id=f"{path.stem}-{n}") for n, rec in records
    ]


def read_truthfulqa_mc(path: PathLike) -> list[dict[str, Any]]:
    """TruthfulQA mc_task.json as ``{"question", "choices" (mc1, file order), "correct" (index)}``.

    The correct answer is first in the file, so shuffle choices before showing them to a model.
    """
    path, items = _read_json_array(path)
    out = []
    for n, item in enumerate(items, 1):
        where = _row(path, n)
        if not isinstance(item, Mapping):
            raise DataError(f"expected an object, got {_describe(item)}", where, "each item must be a JSON object")
        _require_keys(item, ("question", "mc1_targets"), where)
        targets = item["mc1_targets"]
        if not isinstance(targets, Mapping) or not all(isinstance(k, str) and v in (0, 1) for k, v in targets.items()):
            raise DataError("'mc1_targets' must map answer text to 0 or 1", where, "write {answer: 1 if true else 0}")
        labels = list(targets.values())
        if labels.count(1) != 1:
            raise DataError(f"'mc1_targets' has {labels.count(1)} true answers; mc1 needs exactly 1", where,
                            "mark exactly one answer with 1")
        out.append({"question": _text(item["question"], "question", where),
                    "choices": [c.strip() for c in targets], "correct": labels.index(1)})
    return out


def read_advbench_csv(path: PathLike) -> list[dict[str, str]]:
    """AdvBench harmful_behaviors.csv as ``{"goal", "target"}`` dicts (prompts, no refusals)."""
    path, header, records = _read_csv(path)
    _require_columns(header, ("goal", "target"), f"{path}:header", "use AdvBench's harmful_behaviors.csv (goal,target)")
    return [{"goal": rec["goal"].strip(), "target": rec["target"].strip()} for _, rec in records]


# --------------------------------------------------------------------------- checks and splits


@dataclass
class ValidationReport:
    """Pairs kept by ``validate`` and what was dropped, with counts per reason."""

    pairs: list[ContrastivePair]
    dropped_duplicates: int = 0
    dropped_empty: int = 0
    dropped_identical: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_duplicates + self.dropped_empty + self.dropped_identical

    def summary(self) -> str:
        return (f"kept {len(self.pairs)}, dropped {self.dropped_empty} with an empty field, "
                f"{self.dropped_identical} with matching == not_matching, {self.dropped_duplicates} exact duplicates")


def validate(pairs: Sequence[ContrastivePair], source: str = "<name>", strict: bool = False) -> ValidationReport:
    """Drop exact duplicates; drop (or, if ``strict``, reject) empty and self-contrasting pairs.

    Row N in messages is the pair's 1-based position in ``pairs``. Raises DataError when nothing is left.
    """
    report = ValidationReport(pairs=[])
    seen: set[tuple[str, str, str]] = set()
    for n, pair in enumerate(pairs, 1):
        label = f"row {n}" + (f" (id {pair.id})" if pair.id else "")
        empty = [k for k in PAIR_FIELDS if not getattr(pair, k).strip()]
        if empty:
            if strict:
                raise DataError(f"empty {', '.join(empty)}", f"{source}:row {n}",
                                "fill in the field or remove the row (non-strict validation drops it)")
            report.dropped_empty += 1
            report.problems.append(f"{label}: empty {', '.join(empty)} (dropped)")
            continue
        if pair.matching == pair.not_matching:
            if strict:
                raise DataError("matching and not_matching are the same text, so the pair contrasts nothing",
                                f"{source}:row {n}", "give the two responses different texts or remove the row")
            report.dropped_identical += 1
            report.problems.append(f"{label}: matching == not_matching (dropped)")
            continue
        key = (pair.question, pair.matching, pair.not_matching)
        if key in seen:
            report.dropped_duplicates += 1
            report.problems.append(f"{label}: exact duplicate of an earlier row (dropped)")
            continue
        seen.add(key)
        report.pairs.append(pair)
    if not report.pairs:
        raise DataError(
            f"no usable pairs: {len(pairs)} in, {report.dropped_empty} with an empty field, "
            f"{report.dropped_identical} with matching == not_matching, {report.dropped_duplicates} exact duplicates",
            source,
            "check that the file and column mapping are right; each pair needs a question and two different responses",
        )
    return report


def split(
    pairs: Sequence[ContrastivePair], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ContrastivePair], list[ContrastivePair]]:
    """Deterministic group split: pairs sharing a question land on the same side.

    Questions are ordered by sha256(seed, question) (no Python hash), then whole groups go to
    test until it holds about ``test_fraction`` of the pairs; train always keeps at least one group.
    Both sides keep the input order.
    """
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}", "test_fraction", "use e.g. 0.2")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.question, []).append(i)
    target = round(test_fraction * len(pairs))
    if target and len(groups) < 2:
        raise DataError(f"cannot split {len(pairs)} pairs: they share {len(groups)} distinct question(s)",
                        "split", "add pairs with other questions, or use test_fraction=0")
    order = sorted(groups, key=lambda q: hashlib.sha256(f"{seed}\x00{q}".encode()).hexdigest())
    test_idx: set[int] = set()
    for q in order[:-1]:
        if len(test_idx) >= target:
            break
        test_idx.update(groups[q])
    train = [p for i, p in enumerate(pairs) if i not in test_idx]
    test = [p for i, p in enumerate(pairs) if i in test_idx]
    return train, test
