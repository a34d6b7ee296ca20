"""Plain-text inputs: one text per line (neutral paragraphs for the fluency cost, LoRA training texts)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..layout import neutral_texts_file


def read_lines(path: str | Path, what: str = "texts") -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped (an empty file is an error)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read {what} ({exc})", where=str(path), fix="give a UTF-8 text file with one text per line"
        ) from None
    texts = [ln.strip() for ln in lines if ln.strip()]
    if not texts:
        raise DataError(f"no {what} in the file", where=str(path), fix="write one text per line")
    return texts


def neutral_texts(path: str | Path | None = None) -> list[str]:
    """Neutral paragraphs (one per line) used to measure the fluency cost of steering; default: steerkit's own."""
    return read_lines(path if path else neutral_texts_file(), "neutral texts")
