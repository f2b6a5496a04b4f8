"""Every layer kind read the right way round: a transposed convolution shows one filter per
output channel (its weight's second axis), paired with that channel's statistics; weights
that are not real floating point are read dequantized (and the page says so) or refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reportgen.build import build
from reportgen.core.errors import ModelLoadError
from reportgen.load.models import load_model
from reportgen.load.spec import load_spec
from tests.conftest import tiny_module, write_spec

UPSAMPLER = """\
import torch
from torch import nn


class Up(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)  # weight (4, 3, 2, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.up(torch.relu(self.conv(x))))
"""


def _filter(w: np.ndarray, out_channel: int, groups: int) -> np.ndarray:
    """Output channel o's filter of a transposed convolution, from the definition: the input
    channels of its group, at its place within the group on the second axis."""
    c_in, per_group = w.shape[:2]
    g, j = divmod(out_channel, per_group)
    return w[g * c_in // groups:(g + 1) * c_in // groups, j]


def test_a_transposed_convolution_pairs_each_output_channel_with_its_own_filter(project, one_thread):
    (project / "up.py").write_text(UPSAMPLER)
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("up_arch", project / "up.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Up().eval()
    with torch.no_grad():
        net.up.weight[2:4, 1] = 0  # output channel 4 (group 1's second): no filter at all ...
        net.up.bias[:] = 0.5  # every other channel fires somewhere
        net.up.bias[4] = -1.0  # ... and a negative bias: dead filter and never-active channel, both at 4
        net.up.weight[0:2, 1] *= 3  # output channel 1 (group 0's second): the largest filter
    torch.save(net.state_dict(), project / "up.pt")
    spec = write_spec(project, """\
report: up
title: An upsampler
models:
  - name: up
    arch: up.py:Up
    checkpoint: up.pt
input: {size: 16}
images: [img/*.png]
layers: [conv, up]
""")
    result = build(spec, project / "docs", device="cpu")
    layer = next(lay for lay in result.report["runs"][0]["layers"] if lay["name"] == "up")
    w = net.up.weight.detach().numpy()
    assert layer["weight_shape"] == [6, 2, 2, 2]  # one filter per output channel, of its group's inputs
    norms = [np.linalg.norm(_filter(w, o, 2)) for o in range(6)]
    np.testing.assert_allclose([f["l2_norm"] for f in layer["filters"]], norms, rtol=1e-6)
    assert [f["dead"] for f in layer["filters"]] == [o == 4 for o in range(6)]
    assert [c["never_active"] for c in layer["channels"]] == [o == 4 for o in range(6)]
    assert int(np.argmax([f["l2_norm"] for f in layer["filters"]])) == 1
    assert "transposed convolution" in layer["weights_note"]
    page = (project / "docs/up/locations/up.md").read_text()
    assert "weights of a transposed convolution, stored input channel first" in page


def _one_location(project, checkpoint: str):
    from tests.conftest import SPEC

    text = SPEC.replace("    checkpoint: ckpt/{location}.pt\n    locations: [a, b, c]\n", f"    checkpoint: {checkpoint}\n")
    return write_spec(project, text)


@pytest.mark.parametrize("dtype,says", [(torch.int64, "read integers as weights"),
                                        (torch.complex64, "drop its imaginary part")])
def test_weights_that_are_not_real_floats_are_refused_in_one_line(project, dtype, says):
    state = tiny_module().state_dict()
    state["conv1.weight"] = (state["conv1.weight"] * 100).to(dtype)
    torch.save(state, project / "odd.pt")
    spec = load_spec(_one_location(project, "odd.pt"))
    with pytest.raises(ModelLoadError) as err:
        load_model(spec, spec.runs[0])
    msg = str(err.value)
    assert "\n" not in msg and f"tensor 'conv1.weight' is {str(dtype)[6:]}, but the model's is float32" in msg
    assert says in msg and "save the checkpoint with the floating-point weights" in msg


def test_quantized_checkpoint_weights_are_read_dequantized_and_the_page_says_so(project, one_thread):
    state = tiny_module().state_dict()
    q = torch.quantize_per_tensor(state["conv1.weight"], scale=0.01, zero_point=0, dtype=torch.qint8)
    state["conv1.weight"] = q
    torch.save(state, project / "q.pt")
    result = build(_one_location(project, "q.pt"), project / "docs", device="cpu")
    layer = result.report["runs"][0]["layers"][0]
    want = q.dequantize().reshape(4, -1).norm(dim=1).numpy()
    np.testing.assert_allclose([f["l2_norm"] for f in layer["filters"]], want, rtol=1e-6)
    assert layer["weights_note"].startswith("dequantized from the checkpoint's qint8")
    assert "dequantized from the checkpoint's qint8" in (project / "docs/tiny/locations/tiny.md").read_text()
