"""SteeringVector: files, applying to a model, arithmetic, fitting and refusing bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random

import pytest
import torch
from safetensors.torch import save as st_save

from steerkit.errors import VectorError
from steerkit.fileio import sha256_bytes, sha256_file
from steerkit.models import decoder_layers
from steerkit.vector import FORMAT, FORMAT_VERSION, SteeringVector, model_meta, weighted_sum

from ..conftest import TinyTokenizer, tiny_model

HIDDEN, N_LAYERS = 32, 4


def rand_vec(layers=(1,), size: int = HIDDEN, seed: int = 0, **meta) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({i: torch.randn(size, generator=g) for i in layers}, dict(meta))


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def ids():
    return torch.tensor([TinyTokenizer()("<user>Hello there<assistant>")["input_ids"]])


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.clone()


def no_hooks(model) -> bool:
    return all(len(b._forward_hooks) == 0 for b in decoder_layers(model))


class ReferenceSteer:
    """Independent of steerkit: hook that adds ``m * v`` to a block's hidden-state output."""

    def __init__(self, model, layers: dict[int, torch.Tensor], m: float) -> None:
        self.handles = []
        blocks = decoder_layers(model)
        for i, v in layers.items():
            self.handles.append(blocks[i].register_forward_hook(self._hook(m * v)))

    @staticmethod
    def _hook(delta):
        def hook(_mod, _inp, out):
            if isinstance(out, tuple):
                return (out[0] + delta,) + tuple(out[1:])
            return out + delta

        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


# --- files ---------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    meta = {
        "behavior": "power-seeking",
        "method": "bipo",
        "model": "tiny",
        "layer": 2,
        "beta": 0.1,
        "nested": {"list": [1, 2.5, "x"], "none": None},
        "unicode": "déjà vu ✓",
    }
    vec = rand_vec((0, 2, 3), **meta)
    path = tmp_path / "sub" / "v.safetensors"
    digest = vec.save(path)

    data = path.read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    assert header["__metadata__"]["format"] == FORMAT == "steerkit.vector"
    assert header["__metadata__"]["format_version"] == str(FORMAT_VERSION)
    assert json.loads(header["__metadata__"]["steerkit"]) == meta
    assert sorted(k for k in header if k != "__metadata__") == ["layer.0", "layer.2", "layer.3"]
    assert all(header[k]["dtype"] == "F32" and header[k]["shape"] == [HIDDEN] for k in header if k != "__metadata__")

    back = SteeringVector.load(path)
    assert back.layer_ids == [0, 2, 3]
    for i in (0, 2, 3):
        assert torch.equal(back.layers[i], vec.layers[i])
    assert back.meta == meta
    assert back.hidden_size == HIDDEN
    assert back.norm() == pytest.approx(vec.norm())
    assert os.listdir(path.parent) == ["v.safetensors"]  # atomic: no temp file left


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "v.safetensors"
    rand_vec(seed=1).save(path)
    second = rand_vec(seed=2, note="second")
    digest = second.save(path)
    assert os.listdir(tmp_path) == ["v.safetensors"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert SteeringVector.load(path).meta == {"note": "second"}
    assert torch.equal(SteeringVector.load(path).layers[1], second.layers[1])


def test_the_same_vector_is_the_same_bytes_every_time(tmp_path):
    # safetensors writes __metadata__ keys in hash-map order (it changes from call to call): steerkit sorts them,
    # so a re-saved or re-trained vector keeps its sha256 and DVC hash
    from safetensors.torch import save

    from steerkit.vector import canonical_safetensors

    a, b = rand_vec(seed=3, x=1, note="→ ünïcode"), rand_vec(seed=3, x=1, note="→ ünïcode")
    shas = {a.save(tmp_path / "a.st"), b.save(tmp_path / "b.st")} | {sha256_bytes(a.to_bytes()) for _ in range(20)}
    assert len(shas) == 1 and (tmp_path / "a.st").read_bytes() == (tmp_path / "b.st").read_bytes()
    la, lb = SteeringVector.load(tmp_path / "a.st"), SteeringVector.load(tmp_path / "b.st")
    assert la.meta == lb.meta and torch.equal(la.layers[1], lb.layers[1])
    # the library's own bytes, in whatever order it wrote them, become the same canonical bytes
    raw = {save({"x": torch.ones(3)}, metadata={"b": "2", "a": "1", "c": "é"}) for _ in range(30)}
    assert len({canonical_safetensors(r) for r in raw}) == 1


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from steerkit import fileio

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        rand_vec().save(tmp_path / "v.safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("magic", [b"\x80", b"PK"])
def test_valid_file_whose_header_length_looks_like_pickle_magic_loads(tmp_path, magic):
    """Regression: a safetensors header length of 128 mod 256 starts the file with 0x80 (a pickle's
    first byte), and 0x4B50 mod 65536 with 'PK' (a zip's); such valid vectors were refused."""
    target = 0x80 if magic == b"\x80" else 0x4B50
    modulus = 256 if magic == b"\x80" else 65536
    n0 = int.from_bytes(rand_vec(note="").to_bytes()[:8], "little")
    start = max(0, (target - n0) % modulus - 16)
    found = None
    for k in range(start, start + 64):
        vec = rand_vec(note="x" * k)
        data = vec.to_bytes()
        if data.startswith(magic):
            found = vec
            break
    assert found is not None, "could not build a header of the wanted length"
    path = tmp_path / "v.safetensors"
    found.save(path)
    assert path.read_bytes().startswith(magic)
    back = SteeringVector.load(path)
    assert back.meta == found.meta
    assert torch.equal(back.layers[1], found.layers[1])


def test_every_header_length_round_trips():
    for k in range(0, 300, 1):  # covers all header lengths mod 256 reachable by 8-byte padding
        vec = rand_vec(note="y" * k)
        assert SteeringVector.from_bytes(vec.to_bytes()).meta == {"note": "y" * k}


# --- bad files -----------------------------------------------------------------------------------


def _raises_vector_error(path_or_bytes, match: str | None = None) -> VectorError:
    with pytest.raises(Exception) as info:
        if isinstance(path_or_bytes, bytes):
            SteeringVector.from_bytes(path_or_bytes)
        else:
            SteeringVector.load(path_or_bytes)
    assert type(info.value) is VectorError, f"{type(info.value).__name__}: {info.value}"
    if match:
        assert match in str(info.value), str(info.value)
    return info.value


def test_truncated_file(tmp_path):
    path = tmp_path / "v.safetensors"
    rand_vec((0, 1, 2)).save(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 8, 4, 9):
        path.write_bytes(data[:cut])
        err = _raises_vector_error(path)
        assert str(path) in str(err)


def test_random_bytes(tmp_path):
    r = random.Random(0)
    for size in (1, 7, 8, 9, 64, 1000, 5000):
        for _ in range(5):
            data = bytes(r.getrandbits(8) for _ in range(size))
            _raises_vector_error(data)
    path = tmp_path / "noise.safetensors"
    path.write_bytes(bytes(range(256)) * 4)
    _raises_vector_error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _raises_vector_error(path, match="not a valid safetensors")


def test_torch_save_pickle_refused(tmp_path):
    path = tmp_path / "v.pt"
    torch.save({"layer.1": torch.zeros(HIDDEN)}, path)
    err = _raises_vector_error(path, match="pickle")
    assert "import-pt" in err.fix
    torch.save(torch.zeros(HIDDEN), path, _use_new_zipfile_serialization=False)  # legacy: raw pickle
    _raises_vector_error(path, match="pickle")
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    _raises_vector_error(path, match="pickle")
    path.write_bytes(pickle.dumps({"a": 1}, protocol=5))
    _raises_vector_error(path, match="pickle")


def test_safetensors_without_steerkit_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    path.write_bytes(st_save({"layer.1": torch.zeros(HIDDEN)}))
    _raises_vector_error(path, match="without steerkit metadata")
    path.write_bytes(st_save({"layer.1": torch.zeros(HIDDEN)}, metadata={"format": "pt"}))
    _raises_vector_error(path, match="format='pt'")


def _st(tensors=None, **meta) -> bytes:
    tensors = {"layer.1": torch.zeros(HIDDEN)} if tensors is None else tensors
    return st_save(tensors, metadata={"format": FORMAT, "format_version": "1", **meta})


def test_malformed_steerkit_files():
    _raises_vector_error(_st(format_version="2"), match="newer")
    _raises_vector_error(_st(format_version="abc"), match="format_version")
    _raises_vector_error(_st(steerkit="{not json"), match="bad steerkit metadata")
    _raises_vector_error(_st(steerkit="[1, 2]"), match="JSON object")
    _raises_vector_error(_st({"layer.x": torch.zeros(HIDDEN)}), match="bad steerkit metadata or tensor names")
    _raises_vector_error(_st({"layer.1": torch.zeros(HIDDEN), "other": torch.zeros(HIDDEN)}), match="other")
    _raises_vector_error(_st({"layer.1": torch.zeros(4, 8)}), match="1-D")
    _raises_vector_error(_st({"layer.1": torch.zeros(HIDDEN), "layer.2": torch.zeros(16)}), match="same length")
    _raises_vector_error(_st({}), match="at least one layer")
    # a version-less, meta-less but otherwise valid file is accepted, and half precision is widened
    vec = SteeringVector.from_bytes(
        st_save({"layer.3": torch.ones(HIDDEN, dtype=torch.float16)}, metadata={"format": FORMAT})
    )
    assert vec.meta == {} and vec.layers[3].dtype == torch.float32


def test_missing_file_and_folder(tmp_path):
    _raises_vector_error(tmp_path / "nope.safetensors", match="not found")
    _raises_vector_error(tmp_path)  # a folder, not a file


# --- apply ---------------------------------------------------------------------------------------


def test_apply_changes_logits_and_cleans_up(llama, ids):
    base = logits(llama, ids)
    vec = rand_vec((1,))
    with vec.apply(llama, 4.0) as applied:
        assert applied is vec
        assert len(decoder_layers(llama)[1]._forward_hooks) == 1
        steered = logits(llama, ids)
    assert (steered - base).abs().max() > 1e-3
    assert no_hooks(llama)
    assert torch.equal(logits(llama, ids), base)

    with vec.apply(llama, 0):
        assert torch.equal(logits(llama, ids), base)
    assert no_hooks(llama)


def test_apply_removes_hooks_on_exception(llama, ids):
    base = logits(llama, ids)
    vec = rand_vec((0, 2))
    with pytest.raises(RuntimeError, match="inside"):
        with vec.apply(llama, 3.0):
            assert not torch.equal(logits(llama, ids), base)
            raise RuntimeError("inside")
    assert no_hooks(llama)
    assert torch.equal(logits(llama, ids), base)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("m", [1.0, -2.5])
def test_apply_matches_reference_hook(arch, m, ids):
    model = tiny_model(arch)
    vec = rand_vec((0, 2))
    with ReferenceSteer(model, vec.layers, m):
        expected = logits(model, ids)
    with vec.apply(model, m):
        got = logits(model, ids)
    assert (got - expected).abs().max() < 1e-6
    assert (got - logits(model, ids)).abs().max() > 1e-4  # the steering did something
    assert no_hooks(model)


def test_multiplier_equals_scaled_vector(llama, ids):
    vec = rand_vec((1, 3), seed=5)
    with vec.apply(llama, 2):
        a = logits(llama, ids)
    with (2 * vec).apply(llama, 1):
        b = logits(llama, ids)
    with (-vec).apply(llama, 1):
        c = logits(llama, ids)
    with vec.apply(llama, -1):
        d = logits(llama, ids)
    assert (a - b).abs().max() < 1e-6
    assert (c - d).abs().max() < 1e-6


def test_nested_apply_adds_up(llama, ids):
    a, b = rand_vec((1,), seed=1), rand_vec((1, 2), seed=2)
    with a.apply(llama, 1.0), b.apply(llama, 1.0):
        nested = logits(llama, ids)
    with (a + b).apply(llama, 1.0):
        summed = logits(llama, ids)
    assert (nested - summed).abs().max() < 1e-5
    assert no_hooks(llama)


def test_apply_accepts_integer_and_tensor_multipliers(llama, ids):
    vec = rand_vec((1,))
    with vec.apply(llama, 2):
        a = logits(llama, ids)
    with vec.apply(llama, torch.tensor(2.0)):
        b = logits(llama, ids)
    assert torch.equal(a, b)


# --- multipliers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", None, float("nan"), float("inf"), -float("inf"), [1.0], object()])
def test_bad_multiplier(llama, bad):
    vec = rand_vec((1,))
    with pytest.raises(VectorError, match="multiplier"):
        with vec.apply(llama, bad):
            pass
    assert no_hooks(llama)


@pytest.mark.parametrize("bad", ["abc", None, float("nan")])
def test_bad_weight_in_weighted_sum(bad):
    with pytest.raises(VectorError, match="not"):
        weighted_sum([rand_vec(), rand_vec(seed=1)], [1.0, bad])


# --- arithmetic ----------------------------------------------------------------------------------


def test_arithmetic_same_layer():
    a, b = rand_vec((1,), seed=1, behavior="a"), rand_vec((1,), seed=2, behavior="b")
    a1, b1 = a.layers[1].clone(), b.layers[1].clone()
    assert torch.allclose((a + b).layers[1], a1 + b1)
    assert torch.allclose((a - b).layers[1], a1 - b1)
    assert torch.allclose((3 * a).layers[1], 3 * a1)
    assert torch.allclose((a * 3).layers[1], 3 * a1)
    assert torch.allclose((a * 0.5).layers[1], 0.5 * a1)
    assert torch.allclose((-a).layers[1], -a1)
    assert torch.allclose(weighted_sum([a, b], [0.5, 2]).layers[1], 0.5 * a1 + 2 * b1)
    assert torch.allclose(weighted_sum([a, b]).layers[1], a1 + b1)
    assert (a + b).layer_ids == [1]
    # inputs untouched
    assert torch.equal(a.layers[1], a1) and torch.equal(b.layers[1], b1)
    # metadata records what was combined
    combo = (a - b).meta
    assert combo["method"] == "combination" and combo["signs"] == [1.0, -1.0]
    assert [p["behavior"] for p in combo["parts"]] == ["a", "b"]
    assert (2 * (3 * a)).meta["scale"] == 6.0
    assert weighted_sum([a, b], [0.5, 2]).meta["weights"] == [0.5, 2.0]


def test_arithmetic_different_layers():
    a, b = rand_vec((1,), seed=1), rand_vec((3,), seed=2)
    s, d = a + b, a - b
    assert s.layer_ids == d.layer_ids == [1, 3]
    assert torch.equal(s.layers[1], a.layers[1]) and torch.equal(s.layers[3], b.layers[3])
    assert torch.equal(d.layers[1], a.layers[1]) and torch.equal(d.layers[3], -b.layers[3])
    w = weighted_sum([a, b], [0.5, 2])
    assert w.layer_ids == [1, 3]
    assert torch.allclose(w.layers[1], 0.5 * a.layers[1])
    assert torch.allclose(w.layers[3], 2 * b.layers[3])
    mixed = rand_vec((1, 3), seed=3) + a
    assert torch.allclose(mixed.layers[1], rand_vec((1, 3), seed=3).layers[1] + a.layers[1])


def test_combining_different_hidden_sizes_refused():
    a, b = rand_vec((1,), size=HIDDEN), rand_vec((1,), size=16)
    for op in (lambda: a + b, lambda: a - b, lambda: b + a, lambda: weighted_sum([a, b], [1, 1])):
        with pytest.raises(VectorError, match="16"):
            op()


def test_bad_operands():
    a = rand_vec()
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(TypeError):
        a * "2"
    with pytest.raises(TypeError):
        a * True
    with pytest.raises(VectorError, match="at least one"):
        weighted_sum([])
    with pytest.raises(VectorError, match="2 vectors but 1 weights"):
        weighted_sum([a, a], [1.0])


def test_constructor_validation():
    with pytest.raises(VectorError, match="at least one layer"):
        SteeringVector({})
    with pytest.raises(VectorError, match="1-D"):
        SteeringVector({0: torch.zeros(2, 16)})
    with pytest.raises(VectorError, match=r"\[16, 32\]"):
        SteeringVector({0: torch.zeros(32), 1: torch.zeros(16)})
    v = SteeringVector({"2": torch.ones(8, dtype=torch.float64, requires_grad=True), "0": torch.ones(8)})
    assert v.layer_ids == [0, 2] and list(v.layers) == [0, 2]
    assert all(t.dtype == torch.float32 and not t.requires_grad for t in v.layers.values())


# --- fitting -------------------------------------------------------------------------------------


def test_wrong_hidden_size_names_both(llama):
    vec = rand_vec((1,), size=16, model="other-model")
    with pytest.raises(VectorError) as info:
        with vec.apply(llama):
            pass
    msg = str(info.value)
    assert "16" in msg and "32" in msg and "other-model" in msg
    assert no_hooks(llama)


@pytest.mark.parametrize("layer", [10, 4, -1])
def test_missing_layer_names_layer_count(llama, layer):
    vec = rand_vec((1, layer))
    with pytest.raises(VectorError) as info:
        vec.check_fits(llama)
    msg = str(info.value)
    assert f"[{layer}]" in msg and "4 layers" in msg
    with pytest.raises(VectorError):
        with vec.apply(llama):
            pass
    assert no_hooks(llama)  # the valid layer 1 was not hooked either


def test_model_meta(llama):
    meta = model_meta(llama, "tiny-llama")
    assert meta["model"] == "tiny-llama" and meta["hidden_size"] == 32 and meta["num_layers"] == 4
    assert len(meta["model_fingerprint"]) == 16


# --- BiPO .pt import -----------------------------------------------------------------------------


def test_from_bipo_pt_tensor(tmp_path):
    t = torch.randn(HIDDEN)
    path = tmp_path / "vec_layer_15_power-seeking.pt"
    torch.save(t, path)
    vec = SteeringVector.from_bipo_pt(path, layer=2, behavior="power-seeking")
    assert vec.layer_ids == [2]
    assert torch.equal(vec.layers[2], t)
    assert vec.meta == {
        "method": "bipo",
        "imported_from": path.name,
        "imported_format": "BiPO .pt (official code)",
        "imported_sha256": sha256_file(path),
        "behavior": "power-seeking",
    }

    torch.save(t.reshape(1, HIDDEN).to(torch.bfloat16), path)  # [1, d] and bf16 are flattened/widened
    vec = SteeringVector.from_bipo_pt(path, layer=0)
    assert vec.hidden_size == HIDDEN and vec.layers[0].dtype == torch.float32
    torch.save({"vec": t}, path)  # a one-entry state dict
    assert torch.equal(SteeringVector.from_bipo_pt(path, layer=1).layers[1], t)


def test_from_bipo_pt_non_tensor(tmp_path):
    path = tmp_path / "v.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(VectorError, match="expected a tensor, found list"):
        SteeringVector.from_bipo_pt(path, layer=0)
    torch.save({"a": torch.zeros(2), "b": torch.zeros(2)}, path)
    with pytest.raises(VectorError, match="expected a tensor, found dict"):
        SteeringVector.from_bipo_pt(path, layer=0)
    with pytest.raises(VectorError, match="weights-only"):
        SteeringVector.from_bipo_pt(tmp_path / "missing.pt", layer=0)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(VectorError, match="weights-only"):
        SteeringVector.from_bipo_pt(tmp_path / "junk.pt", layer=0)


def _write_marker(path: str) -> str:
    with open(path, "w") as fh:
        fh.write("pwned")
    return path


class Evil:
    """Unpickling this runs ``_write_marker(marker)``: the payload a hostile .pt file would carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def test_from_bipo_pt_never_unpickles_objects(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save(Evil(str(marker)), path)
    assert not marker.exists()  # saving alone does not run the payload

    with pytest.raises(VectorError) as info:
        SteeringVector.from_bipo_pt(path, layer=0)
    assert type(info.value) is VectorError
    assert "weights-only" in str(info.value)
    assert not marker.exists()

    with pytest.raises(VectorError, match="pickle"):
        SteeringVector.load(path)
    assert not marker.exists()

    # The payload is real: a full unpickle would have run it.
    control = tmp_path / "control"
    torch.save(Evil(str(control)), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.read_text() == "pwned"
