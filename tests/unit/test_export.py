"""llama.cpp control-vector export, read back with the gguf package."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from steerkit.errors import VectorError
from steerkit.export import from_llamacpp_gguf, to_llamacpp_gguf
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
