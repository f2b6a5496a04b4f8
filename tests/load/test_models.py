"""Model loading: state_dict + architecture, TorchScript, and every bad input."""

from __future__ import annotations

import os

import pytest
import torch

from reportgen.core.errors import DeviceError, ModelLoadError
from reportgen.load.models import load_model, resolve_device
from reportgen.load.spec import load_spec
from tests.conftest import SPEC, tiny_module, write_spec


def run_of(project, text=SPEC, i=0):
    spec = load_spec(write_spec(project, text))
    return spec, spec.runs[i]


def test_state_dict_loads_exact_weights(project):
    spec, run = run_of(project)
    model = load_model(spec, run).module
    expected = tiny_module(seed=0).state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert not model.training


def test_checkpoint_key_and_module_prefix(project):
    sd = {f"module.{k}": v for k, v in tiny_module(seed=1).state_dict().items()}
    torch.save({"weights": sd}, project / "ckpt" / "a.pt")
    spec, run = run_of(project, SPEC.replace("checkpoint: ckpt", "checkpoint_key: weights\n    checkpoint: ckpt"))
    model = load_model(spec, run).module
    assert torch.equal(model.conv1.weight, tiny_module(seed=1).conv1.weight)


def test_missing_checkpoint_key(project):
    spec, run = run_of(project, SPEC.replace("checkpoint: ckpt", "checkpoint_key: nope\n    checkpoint: ckpt"))
    with pytest.raises(ModelLoadError, match=r"has no key 'nope' \(it has: state_dict, epoch\); fix 'checkpoint_key'"):
        load_model(spec, run)


def test_checkpoint_of_another_architecture(project):
    torch.save(tiny_module(width=8).state_dict(), project / "ckpt" / "b.pt")
    spec, run = run_of(project, i=1)
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, run)
    msg = str(info.value)
    assert msg.startswith(f"location 'b': checkpoint {project / 'ckpt' / 'b.pt'} does not fit the architecture: ")
    assert "wrong shapes (checkpoint vs model) conv1.weight (8, 3, 3, 3) vs (4, 3, 3, 3)" in msg
    assert msg.endswith("check 'arch' and 'arch_args' or the checkpoint path")


def test_missing_and_unexpected_keys(project):
    sd = tiny_module().state_dict()
    sd["extra.weight"] = sd.pop("fc.weight")
    torch.save(sd, project / "ckpt" / "a.pt")
    spec, run = run_of(project)
    with pytest.raises(ModelLoadError, match=r"missing keys fc.weight; unexpected keys extra.weight"):
        load_model(spec, run)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_truncated_or_corrupt_checkpoint(project, content):
    path = project / "ckpt" / "c.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    spec, run = run_of(project, i=2)
    with pytest.raises(ModelLoadError, match=r"^location 'c': checkpoint .*c\.pt is (truncated, )?corrupt"):
        load_model(spec, run)


class Evil:
    """Unpickling this would run os.system: weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused_unless_trusted(project):
    torch.save({"state_dict": tiny_module().state_dict(), "evil": Evil()}, project / "ckpt" / "a.pt")
    spec, run = run_of(project)
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, run)
    assert "refuses, because unpickling them can run code" in str(info.value)
    assert "set 'trusted: true' on the model if you trust the file" in str(info.value)
    spec, run = run_of(project, SPEC.replace("checkpoint: ckpt", "trusted: true\n    checkpoint: ckpt"))
    assert load_model(spec, run).module is not None


def test_whole_module_pickle_needs_trust(project):
    torch.save(tiny_module(), project / "ckpt" / "a.pt")
    spec, run = run_of(project, SPEC.replace("checkpoint: ckpt", "trusted: true\n    checkpoint: ckpt"))
    model = load_model(spec, run).module
    assert torch.equal(model.conv2.weight, tiny_module().conv2.weight)


def test_torchscript(project):
    for loc in "ab":
        torch.jit.save(torch.jit.trace(tiny_module(seed=3), torch.zeros(1, 3, 8, 8)), project / f"ts_{loc}.pt")
    text = SPEC.replace("    arch: arch.py:TinyNet\n    arch_args: {width: 4}\n    checkpoint: ckpt/{location}.pt\n",
                        "    torchscript: ts_{location}.pt\n").replace("[a, b, c]", "[a, b]")
    spec, run = run_of(project, text)
    loaded = load_model(spec, run)
    assert loaded.kind == "torchscript" and not loaded.hookable
    assert torch.equal(dict(loaded.module.named_modules())["conv1"].weight, tiny_module(seed=3).conv1.weight)


def test_corrupt_torchscript(project):
    (project / "ts.pt").write_bytes(b"garbage")
    text = SPEC.replace("    arch: arch.py:TinyNet\n    arch_args: {width: 4}\n    checkpoint: ckpt/{location}.pt\n",
                        "    torchscript: ts.pt\n").replace("    locations: [a, b, c]\n", "")
    spec, run = run_of(project, text)
    with pytest.raises(ModelLoadError, match="is not a readable TorchScript file"):
        load_model(spec, run)


def test_arch_errors(project):
    spec, run = run_of(project, SPEC.replace("arch.py:TinyNet", "arch.py:TinyNett"))
    with pytest.raises(ModelLoadError, match=r"spec.yaml:6: models\[0\].arch: 'arch.py' has no 'TinyNett'; did you mean 'TinyNet'\?"):
        load_model(spec, run)
    spec, run = run_of(project, SPEC.replace("{width: 4}", "{widht: 4}"))
    with pytest.raises(ModelLoadError, match=r"spec.yaml:7: models\[0\].arch_args: 'widht' is not an argument of "
                       r"TinyNet\(width\); did you mean 'width'\?"):
        load_model(spec, run)
    (project / "broken.py").write_text("def oops(:\n")
    spec, run = run_of(project, SPEC.replace("arch.py:TinyNet", "broken.py:X"))
    with pytest.raises(ModelLoadError, match=r"importing broken.py raised SyntaxError"):
        load_model(spec, run)


def test_arch_from_a_package_module(project):
    text = SPEC.replace("arch.py:TinyNet", "torch.nn:Sequential").replace("    arch_args: {width: 4}\n", "").replace(
        "    checkpoint: ckpt/{location}.pt\n", "").replace("    locations: [a, b, c]\n", "").replace(
        "  - conv1\n  - conv2\n  - fc\n", "  - x\n")
    spec, run = run_of(project, text)
    assert isinstance(load_model(spec, run).module, torch.nn.Sequential)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"^device 'cuda:1' was asked for but this machine has no CUDA GPU"):
        resolve_device("cuda:1")


def _state_with(make):
    sd = tiny_module().state_dict()
    sd["conv2.weight"] = make(sd["conv2.weight"])
    return sd


@pytest.mark.parametrize("make, message", [
    (lambda t: t.to_sparse(), r"tensor 'conv2.weight' is stored as sparse_coo, not as a dense tensor"),
    (lambda t: torch.empty(t.shape, device="meta"), r"tensor 'conv2.weight' is a meta tensor"),
])
def test_sparse_and_meta_checkpoints_are_refused(project, make, message):
    torch.save(_state_with(make), project / "ckpt" / "a.pt")
    spec, run = run_of(project)
    with pytest.raises(ModelLoadError, match=rf"location 'a': checkpoint .*a.pt: {message}"):
        load_model(spec, run)


def test_an_edited_architecture_file_is_imported_again(project):
    spec, run = run_of(project)
    assert load_model(spec, run).module.conv1.out_channels == 4
    text = (project / "arch.py").read_text().replace("nn.Conv2d(3, width, 3, padding=1)",
                                                     "nn.Conv2d(3, width + 1, 3, padding=1)")
    (project / "arch.py").write_text(text + "\n# edited\n")
    spec, run = run_of(project, SPEC.replace("    checkpoint: ckpt/{location}.pt\n", ""))
    assert load_model(spec, run).module.conv1.out_channels == 5
    assert not (project / "__pycache__").exists()  # nothing written beside the user's file


class LeNet(torch.nn.Module):
    """Unpadded convolutions: 32 -> 28 -> 14 -> 10 -> 5, so fc takes 16 * 5 * 5."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 5)
        self.pool1 = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.pool2 = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        return self.fc(self.pool2(self.conv2(self.pool1(self.conv1(x)))).flatten(1))


def test_size_is_inferred_from_the_first_linear_layer():
    from reportgen.run.preflight import suggest_size

    size, how = suggest_size(LeNet(), 3)
    # by hand: 5 -> (5-1)*2+2 = 10 -> 10+4 = 14 -> (14-1)*2+2 = 28 -> 28+4 = 32
    assert size == (32, 32) and how.startswith("inferred from the first Linear layer")
    with torch.no_grad():
        assert LeNet()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_size_search_falls_back_to_common_sizes():
    from reportgen.run.preflight import suggest_size

    class Stem(torch.nn.Module):  # a Linear with no conv before it: nothing to infer from
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 28 * 28, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    size, how = suggest_size(Stem(), 3)
    assert size == (28, 28) and how.startswith("found by trying common sizes")
