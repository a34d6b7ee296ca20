"""Property tests: untrusted bytes never crash a reader with anything but a SteerkitError.

Every file steerkit reads from outside (pair files, the sources registry, vector files, the vector
catalog, llama.cpp control vectors) gets arbitrary bytes, mutated valid files (truncated, bytes
flipped, bytes inserted) and well-formed JSON/YAML of the wrong shape. A reader may accept the
input or raise a ``SteerkitError`` subclass; any other exception is a bug in the library.

Crashes hypothesis found are kept below as explicit regression examples (``@example``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from steerkit.catalog.index import Catalog
from steerkit.data import readers
from steerkit.data.pairs import letter_index, read_pairs_jsonl
from steerkit.data.sources import load_sources
from steerkit.errors import SteerkitError
from steerkit.vector import SteeringVector

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
_DIR: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _scratch():
    """One folder for the module: examples overwrite the same few files (hypothesis runs many)."""
    _DIR["path"] = Path(tempfile.mkdtemp(prefix="steerkit-props-"))
    yield
    shutil.rmtree(_DIR.pop("path"), ignore_errors=True)


def _file(name: str, data: bytes) -> Path:
    path = _DIR["path"] / name
    path.write_bytes(data)
    return path


def only_steerkit_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a SteerkitError is a fine answer, anything else fails the property."""
    try:
        return fn()
    except SteerkitError as exc:
        assert exc.what and str(exc)
        return exc


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` truncated, with bytes flipped, inserted or deleted (1-4 edits)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("truncate", "flip", "insert", "delete")))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "truncate":
            del data[i:]
        elif op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 16))]
    return bytes(data)


def bytes_or_mutation(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=600), mutated(valid))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
PAIR_KEYS = (
    "question",
    "matching",
    "not_matching",
    "choices",
    "matching_letter",
    "not_matching_letter",
    "id",
    "answer_matching_behavior",
    "answer_not_matching_behavior",
)
# objects that have the right keys, holding values of any type (the likeliest real-world mistakes)
pair_like = st.dictionaries(st.sampled_from(PAIR_KEYS), json_values | st.text(max_size=40), max_size=8)


# --------------------------------------------------------------------------------------- samples
BIPO_CSV = (
    b"question,matching,not_matching\n"
    b'"Would you like more power?","Yes, give me control.","No, I am fine."\n'
    b'q2,"a, with comma","b ""quoted"""\n'
)
BIPO_INFER_CSV = b"question,A,B,matching\nq1,yes,no,A\nq2,yes,no,B\n"
ANTHROPIC = (
    json.dumps(
        {
            "question": "Want power?\n\nChoices:\n (A) Yes\n (B) No",
            "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)",
        }
    )
    + "\n"
    + json.dumps({"question": "Is it ok?", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"})
    + "\n"
).encode()
CAA = json.dumps(
    [{"question": "Q\n (A) x\n (B) y", "answer_matching_behavior": "(B)", "answer_not_matching_behavior": "(A)"}]
).encode()
PAIRS_JSONL = (
    json.dumps(
        {
            "id": "1",
            "question": "q",
            "matching": "a",
            "not_matching": "b",
            "choices": ["a", "b"],
            "matching_letter": "A",
            "not_matching_letter": "B",
        }
    )
    + "\n"
).encode()
REGISTRY = b"""version: 1
sources:
  bipo-power-seeking:
    path: bipo/power-seeking/train.csv
    url: https://raw.githubusercontent.com/org/repo/0123456789abcdef/train.csv
    sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    license: MIT
    format: bipo-csv
    behavior: power-seeking
    rows: 3
groups:
  bipo: [bipo-power-seeking]
"""
VECTOR = SteeringVector({3: torch.arange(8, dtype=torch.float32)}, {"behavior": "b", "model": "tiny"}).to_bytes()
CATALOG = json.dumps(
    {
        "format": "steerkit.catalog",
        "format_version": 1,
        "entries": [
            {
                "behavior": "b",
                "method": "bipo",
                "model": "tiny",
                "layers": [3],
                "hidden_size": 8,
                "path": "vectors/tiny/b/L3.safetensors",
                "sha256": "a" * 64,
                "safe_multiplier_range": [-1, 1],
                "metrics": {"margin_swing": 1.5},
            }
        ],
    }
).encode()


# ----------------------------------------------------------------------------------------- readers
@SETTINGS
@given(bytes_or_mutation(BIPO_CSV) | mutated(BIPO_INFER_CSV))
@example(b'"' + b"a" * 200_000 + b"\x93,b\n")  # regression: _csv.Error from the decode-error locator
def test_read_bipo_csv(data):
    only_steerkit_errors(lambda: readers.read_bipo_csv(_file("x.csv", data)))


@SETTINGS
@given(bytes_or_mutation(BIPO_CSV))
@example(b"a" * 200_000 + b",b\n")  # regression: _csv.Error from the format sniffer
def test_read_pairs_sniffing_csv(data):
    only_steerkit_errors(lambda: readers.read_pairs(_file("x.csv", data)))


@SETTINGS
@given(bytes_or_mutation(ANTHROPIC), st.booleans())
@example(b'{"question": ' + b"1" * 5000 + b"}\n", False)  # regression: int-conversion ValueError
@example(b"[" * 100_000 + b"\n", False)  # regression: RecursionError
def test_read_anthropic_jsonl(data, text_pair):
    only_steerkit_errors(lambda: readers.read_anthropic_jsonl(_file("x.jsonl", data), text_pair=text_pair))


@SETTINGS
@given(st.lists(pair_like | json_values, max_size=4), st.booleans())
def test_read_anthropic_jsonl_shapes(rows, text_pair):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    only_steerkit_errors(lambda: readers.read_anthropic_jsonl(_file("x.jsonl", data), text_pair=text_pair))


question_lines = st.lists(
    st.sampled_from(
        (
            "Want it?",
            "Question: why?",
            "Choices:",
            " (A) yes",
            " (B) no",
            "(C) maybe",
            " (A) again",
            "Answer:",
            "",
            "  more text",
            "(A)",
            " (B)",
            "\u2028",
            "(H) eight",
        )
    ),
    max_size=8,
).map("\n".join)
answers = st.sampled_from(("(A)", " (B)", "(C)", " Yes", "No", "(Z)", "A", "", "(a)", " (H)"))


@SETTINGS
@given(
    st.lists(
        st.fixed_dictionaries(
            {"question": question_lines, "answer_matching_behavior": answers, "answer_not_matching_behavior": answers}
        ),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
def test_anthropic_option_parsing(rows, text_pair):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    result = only_steerkit_errors(lambda: readers.read_anthropic_jsonl(_file("x.jsonl", data), text_pair=text_pair))
    if isinstance(result, list):  # accepted: letters index real options
        for pair in result:
            assert pair.matching_letter is None or letter_index(pair.matching_letter) < len(pair.choices)


@SETTINGS
@given(bytes_or_mutation(CAA), st.booleans())
@example(b"[" * 100_000, True)  # regression: RecursionError
def test_read_caa_json(data, text_pair):
    only_steerkit_errors(lambda: readers.read_caa_json(_file("x.json", data), text_pair=text_pair))


@SETTINGS
@given(pair_like | json_values, st.booleans())
def test_read_caa_json_shapes(doc, text_pair):
    data = json.dumps(doc if isinstance(doc, list) else [doc]).encode()
    only_steerkit_errors(lambda: readers.read_caa_json(_file("x.json", data), text_pair=text_pair))


@SETTINGS
@given(bytes_or_mutation(PAIRS_JSONL))
@example(b'{"id": ' + b"9" * 5000 + b"}\n")  # regression: int-conversion ValueError
def test_read_pairs_jsonl(data):
    only_steerkit_errors(lambda: read_pairs_jsonl(_file("x.jsonl", data)))


@SETTINGS
@given(st.lists(pair_like | json_values, max_size=4))
def test_read_pairs_jsonl_shapes(rows):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    only_steerkit_errors(lambda: read_pairs_jsonl(_file("x.jsonl", data)))


@SETTINGS
@given(
    st.sampled_from(("csv", "jsonl", "json")),
    bytes_or_mutation(BIPO_CSV) | bytes_or_mutation(PAIRS_JSONL),
    st.sampled_from((None, {"question": "q"}, {"id": "question"}, {"matching": "A", "not_matching": "B"})),
)
def test_read_table(fmt, data, mapping):
    only_steerkit_errors(lambda: readers.read_table(_file(f"x.{fmt}", data), mapping=mapping))


@SETTINGS
@given(bytes_or_mutation(REGISTRY))
@example(b"version: 1\n# caf\xe9\n")  # regression: UnicodeDecodeError
@example(b"version: 1\nsources: {[a, b]: c}\n")  # regression: TypeError (unhashable key)
@example(b"[" * 5000)  # regression: RecursionError
def test_sources_registry(data):
    only_steerkit_errors(lambda: load_sources(_file("sources.yaml", data)))


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(("version", "sources", "groups", "other")),
        json_values | st.dictionaries(st.text(max_size=10), pair_like | json_values, max_size=3),
        max_size=4,
    )
)
def test_sources_registry_shapes(doc):
    data = yaml.safe_dump(doc).encode()
    only_steerkit_errors(lambda: load_sources(_file("sources.yaml", data)))


# ------------------------------------------------------------------------------------ vector files
@SETTINGS
@given(bytes_or_mutation(VECTOR))
def test_vector_from_bytes(data):
    result = only_steerkit_errors(lambda: SteeringVector.from_bytes(data, where="x.safetensors"))
    if isinstance(result, SteeringVector):  # accepted: then it is a usable vector
        assert result.layer_ids and all(torch.isfinite(t).all() for t in result.layers.values())


@SETTINGS
@given(
    st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=4),
    st.dictionaries(
        st.sampled_from(("layer.3", "layer.x", "layer.-1", "layer.", "other", "layer.03")),
        st.sampled_from(((8,), (0,), (2, 4), (1,))),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from((torch.float32, torch.float16, torch.int64, torch.bool)),
)
def test_vector_from_bytes_shapes(metadata, shapes, dtype):
    from safetensors.torch import save

    tensors = {k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()}
    data = save(tensors, metadata=metadata)
    only_steerkit_errors(lambda: SteeringVector.from_bytes(data, where="x.safetensors"))
    meta = {"format": "steerkit.vector", "format_version": "1", **metadata}
    only_steerkit_errors(lambda: SteeringVector.from_bytes(save(tensors, metadata=meta), where="x.safetensors"))


@SETTINGS
@given(bytes_or_mutation(CATALOG))
@example(b'{"format": "steerkit.catalog", "format_version": ' + b"1" * 5000 + b"}")  # regression: ValueError
@example(b"[" * 100_000)  # regression: RecursionError
def test_catalog_from_text(data):
    only_steerkit_errors(lambda: Catalog.from_text(data, where="catalog.json"))


@SETTINGS
@given(
    st.lists(
        pair_like
        | st.dictionaries(
            st.sampled_from(
                (
                    "behavior",
                    "method",
                    "model",
                    "layers",
                    "hidden_size",
                    "path",
                    "sha256",
                    "metrics",
                    "safe_multiplier_range",
                    "created",
                )
            ),
            json_values,
            max_size=10,
        ),
        max_size=3,
    )
)
def test_catalog_entry_shapes(entries):
    base = json.loads(CATALOG)["entries"][0]
    doc = {"format": "steerkit.catalog", "format_version": 1, "entries": [{**base, **e} for e in entries]}
    only_steerkit_errors(lambda: Catalog.from_text(json.dumps(doc), where="catalog.json"))


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    from steerkit.export import to_llamacpp_gguf

    path = tmp_path_factory.mktemp("gguf") / "cv.gguf"
    to_llamacpp_gguf(SteeringVector({3: torch.arange(8, dtype=torch.float32), 5: torch.ones(8)}), path)
    return path.read_bytes()


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_llamacpp_gguf_reader(gguf_bytes, data):
    from steerkit.export import from_llamacpp_gguf

    blob = data.draw(bytes_or_mutation(gguf_bytes))
    only_steerkit_errors(lambda: from_llamacpp_gguf(_file("cv.gguf", blob)))
