import re

import pytest
import torch

from stimuli.demo_model import DemoCNN, load_demo_model
from stimuli.models import LayerCapture, edit_layer, get_layer, load_vision_model, model_checksum


def test_unknown_layer_lists_available_layers(tiny_cnn):
    expected = "unknown layer 'nope'; available layers: 0, 0.0, 0.1, 0.2, 0.3, 1, 1.0, 1.1, 1.2"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        get_layer(tiny_cnn, "nope")
    with (
        pytest.raises(ValueError, match="^unknown layer 'nope'"),
        LayerCapture(tiny_cnn, ["0.1", "nope"]),
    ):
        pass


def test_capture_and_edit(tiny_cnn):
    x = torch.randn(2, 3, 8, 8)
    with LayerCapture(tiny_cnn, ["0.1", "0"]) as cap:
        tiny_cnn(x)
    assert cap.outputs["0.1"].shape == (2, 8, 8, 8)
    assert not tiny_cnn[0][1]._forward_hooks  # hooks removed on exit
    with edit_layer(tiny_cnn, "0", torch.zeros_like):
        out = tiny_cnn(x)
    assert torch.allclose(out, tiny_cnn[1][2].bias.expand(2, -1))


def test_checksum_changes_with_weights(tiny_cnn):
    before = model_checksum(tiny_cnn)
    assert before == model_checksum(tiny_cnn)
    with torch.no_grad():
        tiny_cnn[1][2].bias += 1
    assert model_checksum(tiny_cnn) != before


def test_vision_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="^library must be 'torchvision' or 'timm', not 'keras'$"):
        load_vision_model("keras", "resnet18", tmp_path / "w.pt")


def test_demo_model_trains_once_and_is_cached(tmp_path):
    first = load_demo_model(data="procedural", train_samples=3000, epochs=2, cache_dir=tmp_path)
    assert isinstance(first.model, DemoCNN)
    assert len(list(tmp_path.glob("demo-cnn-*.pt"))) == 1
    again = load_demo_model(data="procedural", train_samples=3000, epochs=2, cache_dir=tmp_path)
    assert model_checksum(again.model) == model_checksum(first.model)
    assert again.accuracy == first.accuracy > 0.5  # chance is 0.1


def test_checksum_covers_scalar_buffers():
    """BatchNorm's num_batches_tracked is a 0-d tensor (every torchvision ResNet has them)."""
    model = torch.nn.BatchNorm2d(3)
    before = model_checksum(model)
    model.num_batches_tracked += 1
    assert model_checksum(model) != before
