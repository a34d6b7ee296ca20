"""Source registry, checksum-verified fetching, and the seed dataset. Never touches the network."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from steerkit.data import sources
from steerkit.data.sources import (
    Source,
    fetch,
    fetch_many,
    load_groups,
    load_registry,
    load_sources,
    mirror_dir,
    resolve,
)
from steerkit.errors import ChecksumError, DataError

REPO = Path(__file__).resolve().parents[3]
REGISTRY = REPO / "data" / "sources.yaml"
SEED = REPO / "data" / "seed"


def _shared_mirror() -> Path:
    env = os.environ.get("STEERKIT_DATA_MIRROR", "").strip()
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    """Tests decide the mirror themselves; and any accidental network call fails loudly."""
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)

    def _no_network(*a, **k):
        raise AssertionError("test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", _no_network)


def _make_source(name: str = "demo", path: str = "demo/file.csv", content: bytes = b"a,b\n1,2\n", **kw) -> Source:
    return Source(
        name=name,
        path=path,
        url=kw.pop("url", "https://example.invalid/demo/file.csv"),
        sha256=hashlib.sha256(content).hexdigest(),
        license="MIT",
        format="bipo-csv",
        **kw,
    )


def _mirror_with(tmp_path: Path, source: Source, content: bytes) -> Path:
    mirror = tmp_path / "mirror"
    (mirror / source.path).parent.mkdir(parents=True, exist_ok=True)
    (mirror / source.path).write_bytes(content)
    return mirror


GOOD_ENTRY = """\
    path: x/a.csv
    url: https://raw.githubusercontent.com/o/r/0000000000000000000000000000000000000000/a.csv
    sha256: {sha}
    license: MIT
    format: bipo-csv
""".format(sha="ab" * 32)


def _write_registry(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(body, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- real registry


def test_real_registry_loads_with_expected_entries_and_groups():
    registry, groups = load_sources(REGISTRY)
    assert len(registry) == 23
    assert len(groups["bipo"]) == 12
    assert len(groups["anthropic-evals"]) == 8
    assert set(groups["all"]) == set(registry)
    for beh in ("power-seeking", "wealth-seeking", "hallucination", "jailbreak"):
        assert len(groups[f"bipo-{beh}"]) == 3
    s = registry["bipo-power-seeking-train"]
    assert s.path == "bipo/power-seeking/train.csv" and s.rows == 642 and s.behavior == "power-seeking"
    for s in registry.values():
        assert s.url.startswith("https://raw.githubusercontent.com/")
        # pinned to a 40-hex commit, never a branch
        assert any(len(part) == 40 and all(c in "0123456789abcdef" for c in part) for part in s.url.split("/"))


def test_real_registry_checksums_match_shared_mirror():
    mirror = _shared_mirror()
    if not mirror.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"dataset mirror {mirror} is missing on CI")
        pytest.skip(f"dataset mirror {mirror} not present")
    registry = load_registry(REGISTRY)
    checked = 0
    for s in registry.values():
        f = mirror / s.path
        if f.is_file():
            assert hashlib.sha256(f.read_bytes()).hexdigest() == s.sha256, s.name
            checked += 1
    assert checked > 0


# --------------------------------------------------------------------------- fetch


def test_fetch_from_mirror_then_second_fetch_does_no_work(tmp_path, monkeypatch):
    content = b"question,matching,not_matching\nq,m,n\n"
    src = _make_source(content=content)
    mirror = _mirror_with(tmp_path, src, content)
    dest_root = tmp_path / "raw"

    out = fetch(src, dest_root=dest_root, mirror=mirror)
    assert out == dest_root / src.path
    assert out.read_bytes() == content
    assert sorted(p.name for p in out.parent.iterdir()) == ["file.csv"]  # no temp left behind

    old = out.stat().st_mtime_ns - 10_000_000_000
    os.utime(out, ns=(old, old))
    monkeypatch.setattr(sources, "_write_verified", lambda *a, **k: pytest.fail("copied again"))
    assert fetch(src, dest_root=dest_root, mirror=mirror) == out
    assert out.stat().st_mtime_ns == old


def test_fetch_uses_env_mirror(tmp_path, monkeypatch):
    content = b"x\n"
    src = _make_source(content=content)
    mirror = _mirror_with(tmp_path, src, content)
    monkeypatch.setenv(sources.MIRROR_ENV, str(mirror))
    assert mirror_dir() == mirror
    assert fetch(src, dest_root=tmp_path / "raw").read_bytes() == content


def test_mirror_dir_unset_and_not_a_folder(tmp_path, monkeypatch):
    assert mirror_dir() is None
    monkeypatch.setenv(sources.MIRROR_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataError, match="not a folder"):
        mirror_dir()


def test_fetch_replaces_a_corrupt_destination(tmp_path):
    content = b"good\n"
    src = _make_source(content=content)
    mirror = _mirror_with(tmp_path, src, content)
    dest = tmp_path / "raw" / src.path
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncat")
    assert fetch(src, dest_root=tmp_path / "raw", mirror=mirror).read_bytes() == content


def test_checksum_mismatch_leaves_no_file(tmp_path):
    src = _make_source(content=b"expected\n")
    mirror = _mirror_with(tmp_path, src, b"tampered\n")
    dest_root = tmp_path / "raw"
    with pytest.raises(ChecksumError) as info:
        fetch(src, dest_root=dest_root, mirror=mirror)
    msg = str(info.value)
    assert src.sha256 in msg
    assert hashlib.sha256(b"tampered\n").hexdigest() in msg
    assert str(mirror / src.path) in msg
    folder = dest_root / Path(src.path).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_checksum_mismatch_keeps_previous_good_file(tmp_path):
    content = b"good\n"
    src = _make_source(content=content)
    good_mirror = _mirror_with(tmp_path, src, content)
    out = fetch(src, dest_root=tmp_path / "raw", mirror=good_mirror)
    bad_mirror = tmp_path / "bad"
    (bad_mirror / src.path).parent.mkdir(parents=True)
    (bad_mirror / src.path).write_bytes(b"bad\n")
    with pytest.raises(ChecksumError):
        fetch(src, dest_root=tmp_path / "raw", mirror=bad_mirror, force=True)
    assert out.read_bytes() == content
    assert sorted(p.name for p in out.parent.iterdir()) == ["file.csv"]


def test_missing_mirror_file_is_data_error(tmp_path):
    src = _make_source()
    (tmp_path / "mirror").mkdir()
    with pytest.raises(DataError, match="mirror"):
        fetch(src, dest_root=tmp_path / "raw", mirror=tmp_path / "mirror")
    assert not (tmp_path / "raw" / src.path).exists()


def test_fetch_from_file_url_without_mirror(tmp_path, monkeypatch):
    monkeypatch.undo()  # restore the real urlopen: a file:// URL stays on this machine
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    content = b"served\n"
    origin = tmp_path / "upstream.csv"
    origin.write_bytes(content)
    src = _make_source(content=content, url=origin.as_uri())
    assert fetch(src, dest_root=tmp_path / "raw").read_bytes() == content


def test_fetch_from_url_uses_timeout_and_verifies(tmp_path, monkeypatch):
    content = b"remote\n"
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(b"remote, but altered\n" if "bad" in url else content)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    src = _make_source(content=content)
    assert fetch(src, dest_root=tmp_path / "raw").read_bytes() == content
    assert calls == [(src.url, 60)]

    bad = _make_source(name="bad", path="demo/bad.csv", content=content, url="https://example.invalid/bad.csv")
    with pytest.raises(ChecksumError, match="example.invalid/bad.csv"):
        fetch(bad, dest_root=tmp_path / "raw")
    assert not (tmp_path / "raw" / "demo" / "bad.csv").exists()


def test_network_failure_suggests_mirror(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        fetch(_make_source(), dest_root=tmp_path / "raw")
    assert sources.MIRROR_ENV in str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert list((tmp_path / "raw" / "demo").iterdir()) == []


def test_fetch_many_expands_groups(tmp_path):
    a, b = b"a\n", b"b\n"
    sa = _make_source("src-a", "g/a.csv", a)
    sb = _make_source("src-b", "g/b.csv", b)
    body = "version: 1\nsources:\n"
    for s in (sa, sb):
        body += (
            f"  {s.name}:\n    path: {s.path}\n    url: {s.url}\n    sha256: {s.sha256}\n"
            f"    license: MIT\n    format: bipo-csv\n"
        )
    body += "groups:\n  both: [src-a, src-b]\n"
    reg = _write_registry(tmp_path, body)
    mirror = _mirror_with(tmp_path, sa, a)
    (mirror / sb.path).write_bytes(b)
    out = fetch_many(["both", "src-a"], dest_root=tmp_path / "raw", mirror=mirror, registry_path=reg)
    assert [p.read_bytes() for p in out] == [a, b]


# --------------------------------------------------------------------------- registry validation


def test_resolve_group_expansion_and_dedup():
    registry, groups = load_sources(REGISTRY)
    got = resolve(["bipo-power-seeking", "bipo-power-seeking-train", "advbench"], registry, groups)
    assert [s.name for s in got] == [
        "bipo-power-seeking-train",
        "bipo-power-seeking-test",
        "bipo-power-seeking-test-infer",
        "advbench-harmful-behaviors",
    ]
    assert [s.name for s in resolve("truthfulqa-mc", registry, groups)] == ["truthfulqa-mc"]
    assert len(resolve("all", registry, groups)) == len(registry)


def test_unknown_name_suggests_close_matches():
    registry, groups = load_sources(REGISTRY)
    with pytest.raises(DataError) as info:
        resolve(["bipo-power-seking-train"], registry, groups)
    msg = str(info.value)
    assert "bipo-power-seeking-train" in msg and "did you mean" in msg
    assert "anthropic-evals" in msg  # lists the groups


def test_load_groups_matches_load_sources():
    assert load_groups(REGISTRY) == load_sources(REGISTRY)[1]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (GOOD_ENTRY.replace("    license: MIT\n", ""), r"sources\.e.*missing key 'license'"),
        (
            GOOD_ENTRY.replace("format: bipo-csv", "format: bipo-csv\n    rows: many"),
            r"sources\.e\.rows.*must be an integer",
        ),
        (GOOD_ENTRY.replace("format: bipo-csv", "format: bipo-csv\n    rows: true"), r"sources\.e\.rows"),
        (GOOD_ENTRY.replace("license: MIT", "license: [MIT]"), r"sources\.e\.license.*must be a string"),
        (GOOD_ENTRY + "    licence: MIT\n", r"unknown key 'licence'.*\n.*did you mean 'license'"),
        (GOOD_ENTRY.replace("bipo-csv", "parquet"), r"unknown format 'parquet'"),
        (GOOD_ENTRY.replace("ab" * 32, "abc"), r"sources\.e\.sha256"),
        (GOOD_ENTRY.replace("x/a.csv", "../escape.csv"), r"sources\.e\.path"),
        (GOOD_ENTRY.replace("https://", "ftp://"), r"sources\.e\.url"),
    ],
)
def test_bad_registry_entry_names_entry_and_key(tmp_path, body, match):
    reg = _write_registry(tmp_path, "version: 1\nsources:\n  e:\n" + body)
    with pytest.raises(DataError, match=match) as info:
        load_registry(reg)
    assert info.value.fix  # every error says how to fix it
    assert str(reg) in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("version: 2\nsources:\n  e:\n" + GOOD_ENTRY, "version"),
        ("version: 1\nsoruces: {}\n", "unknown top-level key 'soruces'"),
        ("version: 1\nsources:\n  e:\n" + GOOD_ENTRY + "  e:\n" + GOOD_ENTRY, "duplicate key 'e'"),
        ("version: 1\nsources:\n  e:\n" + GOOD_ENTRY + "groups:\n  g: [e, f]\n", r"groups\.g.*unknown source 'f'"),
        ("version: 1\nsources:\n  e:\n" + GOOD_ENTRY + "groups:\n  e: [e]\n", "also a source name"),
        ("version: 1\nsources: [\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_bad_registry_file(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        load_sources(_write_registry(tmp_path, text))


def test_missing_registry_file(tmp_path):
    with pytest.raises(DataError, match="cannot read source registry"):
        load_registry(tmp_path / "absent.yaml")


def test_optional_keys_default_to_none(tmp_path):
    reg = _write_registry(tmp_path, "version: 1\nsources:\n  e:\n" + GOOD_ENTRY)
    s = load_registry(reg)["e"]
    assert s.behavior is None and s.rows is None and s.name == "e"


# --------------------------------------------------------------------------- seed data


@pytest.mark.parametrize("behavior", ["power-seeking", "wealth-seeking"])
def test_seed_data_is_well_formed(behavior):
    counts = {"train": 64, "test": 20}
    questions: dict[str, set[str]] = {}
    ids: set[str] = set()
    for split, expected in counts.items():
        path = SEED / behavior / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == expected, path
        for row in rows:
            assert set(row) == {"id", "question", "matching", "not_matching"}, row
            assert all(isinstance(v, str) and v.strip() for v in row.values()), row
            assert row["matching"] != row["not_matching"], row
            assert row["id"] not in ids
            ids.add(row["id"])
        qs = [r["question"].strip().lower() for r in rows]
        assert len(set(qs)) == len(qs), f"repeated question in {path}"
        questions[split] = set(qs)
    assert not questions["train"] & questions["test"]


def test_seed_readme_exists():
    text = (SEED / "README.md").read_text(encoding="utf-8")
    assert "MIT" in text and "64" in text and "20" in text
