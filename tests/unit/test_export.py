"""llama.cpp control-vector export, read back with the gguf package."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from steerkit.errors import VectorError
from steerkit.export import from_llamacpp_gguf, to_llamacpp_gguf
from steerkit.fileio import sha256_file
from steerkit.vector import SteeringVector


def test_gguf_round_trip_has_the_llamacpp_layout(tmp_path):
    vec = SteeringVector({15: torch.randn(576), 20: torch.randn(576)}, {"model": "smollm2-135m-instruct"})
    path = to_llamacpp_gguf(vec, tmp_path / "cv.gguf", multiplier=-1.5)
    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2
    names = sorted(t.name for t in reader.tensors)
    assert names == ["direction.15", "direction.20"]
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and len(t.shape) == 1 and int(t.shape[0]) == 576
    back = from_llamacpp_gguf(path)
    assert back.meta["model"] == "smollm2-135m-instruct"
    for layer in (15, 20):
        np.testing.assert_allclose(back.layers[layer].numpy(), (-1.5 * vec.layers[layer]).numpy(), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["cv.gguf"]  # no temp file left


def test_layer_zero_cannot_be_exported(tmp_path):
    with pytest.raises(VectorError, match="layer 0"):
        to_llamacpp_gguf(SteeringVector({0: torch.ones(8)}), tmp_path / "cv.gguf")
    assert not list(tmp_path.iterdir())


def test_garbage_is_refused(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 7)
    with pytest.raises(VectorError):
        from_llamacpp_gguf(bad)


def test_cli_export(tmp_path):
    from typer.testing import CliRunner

    from steerkit.cli import app

    src = tmp_path / "v.safetensors"
    SteeringVector({3: torch.ones(8)}, {"model": "m"}).save(src)
    res = CliRunner().invoke(app, ["export", str(src), "-o", str(tmp_path / "v.gguf"), "-x", "2"])
    assert res.exit_code == 0, res.output
    assert torch.equal(from_llamacpp_gguf(tmp_path / "v.gguf").layers[3], torch.full((8,), 2.0))
    res = CliRunner().invoke(app, ["export", str(src), "-o", str(tmp_path / "w.gguf"), "-x", "two"])
    assert res.exit_code == 2 and "not a number" in res.output and not (tmp_path / "w.gguf").exists()


def write_like_repeng(path, directions: dict[int, np.ndarray], model_hint: str) -> None:
    """A control vector written the way repeng's ``export_gguf`` writes one, with the gguf package alone."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, values in directions.items():
        writer.add_tensor(f"direction.{layer}", values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_control_vector_from_another_tool_imports_with_where_it_came_from(tmp_path):
    rng = np.random.default_rng(0)
    directions = {layer: rng.standard_normal(8) for layer in range(1, 6)}  # repeng steers a range of layers
    src = tmp_path / "honesty.gguf"
    write_like_repeng(src, directions, "mistralai/Mistral-7B-Instruct-v0.1")
    vec = from_llamacpp_gguf(src, behavior="honesty")
    assert vec.layer_ids == [1, 2, 3, 4, 5]
    for layer, values in directions.items():
        np.testing.assert_array_equal(vec.layers[layer].numpy(), values.astype(np.float32))
    assert vec.meta["model"] == "mistralai/Mistral-7B-Instruct-v0.1" and vec.meta["behavior"] == "honesty"
    assert vec.meta["method"] == "imported" and vec.meta["imported_from"] == "honesty.gguf"
    assert vec.meta["imported_format"].startswith("llama.cpp") and vec.meta["imported_sha256"] == sha256_file(src)
    # and back out: steerkit's export of the imported vector holds the same numbers
    again = from_llamacpp_gguf(to_llamacpp_gguf(vec, tmp_path / "again.gguf"))
    assert all(torch.equal(again.layers[i], vec.layers[i]) for i in vec.layer_ids)


def test_cli_import_puts_a_foreign_vector_in_the_catalog(tmp_path):
    from typer.testing import CliRunner

    from steerkit.catalog.build import build_catalog
    from steerkit.cli import app

    src = tmp_path / "cv.gguf"
    write_like_repeng(src, {2: np.arange(8.0)}, "tiny")
    out = tmp_path / "vectors" / "tiny" / "power-seeking" / "L2.imported.safetensors"
    res = CliRunner().invoke(app, ["vector", "import", str(src), "--behavior", "power-seeking", "-o", str(out)])
    assert res.exit_code == 0, res.output
    saved = SteeringVector.load(out)
    assert saved.meta["imported_sha256"] == sha256_file(src) and saved.meta["model"] == "tiny"
    (entry,) = build_catalog(tmp_path).entries
    assert (entry.behavior, entry.model, entry.method, entry.layers) == ("power-seeking", "tiny", "imported", [2])
