"""Reading data files at the edge: UTF-8 text, CSV, JSONL and JSON arrays, every error located.

Each reader returns plain rows with their row numbers; the format readers (``readers``,
``benchmarks``) turn rows into pairs. A problem names the file and the row or line, and says how
to fix the file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError

PathLike = str | os.PathLike
BOM = b"\xef\xbb\xbf"
UTF8_FIX = (
    "re-encode the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv`, "
    "or save as 'CSV UTF-8' from a spreadsheet)"
)


def describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"


def text_field(value: Any, key: str, where: str | None) -> str:
    """``value`` stripped, or DataError if it is not a string."""
    if not isinstance(value, str):
        raise DataError(
            f"field '{key}' must be text, got {describe(value)}",
            where,
            f"make '{key}' a string (quote it in JSON)",
        )
    return value.strip()


def require_keys(d: Mapping[str, Any], keys: Iterable[str], where: str | None) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(
            f"missing key(s) {', '.join(repr(k) for k in missing)}; found keys: {sorted(map(str, d))}",
            where,
            "add the missing keys, or say which keys hold the pair (a column mapping)",
        )


def require_columns(columns: Sequence[str], needed: Iterable[str], where: str, fix: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"missing required column(s) {', '.join(repr(c) for c in missing)}; found columns: {list(columns)}",
            where,
            fix,
        )


def row_where(path: Path, n: int) -> str:
    return f"{path}:row {n}"


def json_problem(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "arrays/objects nested too deeply"
    return str(e).split(";")[0]  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"


def read_text(path: PathLike, kind: str) -> tuple[Path, str]:
    """Read a UTF-8 file (a leading BOM is dropped); locate decode errors by ``kind``."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path), "check the path (relative paths start at the working directory)")
    if path.is_dir():
        raise DataError("is a folder, not a file", str(path), "point at the data file inside it")
    data = path.read_bytes()
    skip = len(BOM) if data.startswith(BOM) else 0
    try:
        return path, data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + skip
        prefix = data[skip : skip + e.start].decode("utf-8")
        line = prefix.count("\n") + 1
        if kind == "csv":
            try:
                records = [r for r in csv.reader(io.StringIO(prefix + "x", newline="")) if r]
                where = row_where(path, len(records) - 1) if len(records) > 1 else f"{path}:header"
            except csv.Error:  # the text before the bad byte is itself malformed: fall back to the line
                where = f"{path}:line {line}"
        elif kind == "jsonl":
            where = row_where(path, line)
        else:
            where = f"{path}:line {line}"
        raise DataError(
            f"not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset}", where, UTF8_FIX
        ) from None


def read_csv(path: PathLike) -> tuple[Path, list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(data row number, {column: value})`` records; blank lines are skipped."""
    path, text = read_text(path, "csv")
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
                f"malformed CSV (record starting at line {start_line}): {e}", row_where(path, n + 1), fix
            ) from None
        if not values:
            continue
        n += 1
        if len(values) != len(header):
            raise DataError(
                f"has {len(values)} fields but the header has {len(header)} (record starting at line {start_line})",
                row_where(path, n),
                fix,
            )
        records.append((n, dict(zip(header, values))))
    return path, header, records


def read_jsonl(path: PathLike) -> tuple[Path, list[tuple[int, Any]]]:
    """``(line number, parsed value)`` per non-blank line.

    Splits on "\\n" only: str.splitlines() would also split on U+2028/U+0085, which JSON text may hold raw.
    """
    path, text = read_text(path, "jsonl")
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"not valid JSON (column {e.colno}): {e.msg}",
                row_where(path, n),
                "put exactly one complete JSON object on each line",
            ) from None
        except (ValueError, RecursionError) as e:  # an integer too long to convert, nesting too deep
            raise DataError(
                f"unusable JSON: {json_problem(e)}",
                row_where(path, n),
                "put exactly one plain JSON object of texts on each line",
            ) from None
    return path, rows


def read_json_array(path: PathLike) -> tuple[Path, list[Any]]:
    path, text = read_text(path, "json")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON: {e.msg}", f"{path}:line {e.lineno} col {e.colno}", "fix the JSON syntax at that spot"
        ) from None
    except (ValueError, RecursionError) as e:  # an integer too long to convert, nesting too deep
        raise DataError(
            f"unusable JSON: {json_problem(e)}", str(path), "write a JSON array of plain objects of texts"
        ) from None
    if not isinstance(value, list):
        raise DataError(
            f"expected a JSON array of objects, got a JSON {type(value).__name__}",
            str(path),
            "wrap the records in [...]; for one object per line use a .jsonl file",
        )
    return path, value
