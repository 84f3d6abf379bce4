"""Checkpoint files: rebuild from the recorded spec, strict loading with clear errors, weights-only."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from mtard import checkpoint as ckpt
from mtard.errors import MtardError
from mtard.models import build_model


def digits_model(arch: str = "small_cnn", num_classes: int = 10):
    torch.manual_seed(0)
    return build_model(arch, num_classes=num_classes, in_channels=1, image_size=8)


def spec(arch: str = "small_cnn", num_classes: int = 10) -> dict:
    return ckpt.model_spec(arch, num_classes=num_classes, in_channels=1, image_size=8, dataset="digits")


class Evil:
    """Unpickling an instance of a custom class needs code from this module: never allowed."""

    def __init__(self) -> None:
        self.payload = 1


def test_save_load_rebuilds_the_architecture(tmp_path: Path) -> None:
    model = digits_model("small_cnn")
    model.train()
    with torch.no_grad():  # make BN buffers non-default so they must travel too
        model(torch.rand(16, 1, 8, 8))
    path = tmp_path / "sub" / "model.pt"
    ckpt.save(path, {"model": spec(), "state_dict": model.state_dict(), "epoch": 3})
    assert not path.with_name("model.pt.tmp").exists()  # atomic write leaves no temp file
    loaded = ckpt.load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    payload = ckpt.read(path)
    assert payload["format"] == ckpt.FORMAT and payload["epoch"] == 3
    assert ckpt.spec_of(path) == spec()


def test_module_prefix_is_stripped(tmp_path: Path) -> None:
    model = digits_model("mlp")
    ddp_style = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    path = tmp_path / "ddp.pt"
    ckpt.save(path, {"model": spec("mlp"), "state_dict": ddp_style})
    loaded = ckpt.load_checkpoint(path)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))


def test_strip_prefix_only_when_every_key_has_it() -> None:
    t = torch.zeros(1)
    assert ckpt.strip_prefix({"module.a": t, "module.b": t}) == {"a": t, "b": t}
    mixed = {"module.a": t, "b": t}
    assert ckpt.strip_prefix(mixed) == mixed


def test_state_dict_of_foreign_layouts() -> None:
    t = torch.ones(2)
    assert ckpt.state_dict_of({"w": t, "epoch": 5}) == {"w": t}  # bare state dict (non-tensors dropped)
    assert ckpt.state_dict_of({"state_dict": {"w": t}, "epoch": 5}) == {"w": t}
    assert ckpt.state_dict_of({"model_state_dict": {"w": t}}) == {"w": t}
    assert ckpt.state_dict_of({"model": {"w": t}}) == {"w": t}


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "liar.pt"
    # Weights of an MLP, but the file claims to be a small_cnn.
    ckpt.save(path, {"model": spec("small_cnn"), "state_dict": digits_model("mlp").state_dict()})
    with pytest.raises(MtardError) as err:
        ckpt.load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "'small_cnn'" in msg
    assert "missing keys: classifier.bias" in msg  # sorted sample of the small_cnn keys
    assert "unexpected keys: net.1.bias" in msg


def test_wrong_class_count_names_the_shape_and_the_arch(tmp_path: Path) -> None:
    path = tmp_path / "five.pt"
    ckpt.save(path, {"model": spec("small_cnn", 10), "state_dict": digits_model("small_cnn", 5).state_dict()})
    with pytest.raises(MtardError) as err:
        ckpt.load_checkpoint(path)
    msg = str(err.value)
    assert "'small_cnn'" in msg and "classifier" in msg
    assert "(5," in msg and "(10," in msg  # the file's shape and the expected one
    assert "number of classes" in msg


def test_load_weights_error_for_a_plain_module(tmp_path: Path) -> None:
    model = digits_model("mlp")
    bad = dict(model.state_dict())
    bad.pop("net.5.bias")
    with pytest.raises(MtardError, match=r"missing keys: net\.5\.bias") as err:
        ckpt.load_weights(digits_model("mlp"), bad, arch="mlp", source="teacher.pt")
    assert "teacher.pt" in str(err.value) and "unexpected" not in str(err.value)


def test_pickle_that_needs_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": spec("mlp"), "state_dict": digits_model("mlp").state_dict(), "extra": Evil()}, path)
    with pytest.raises(MtardError) as err:
        ckpt.load_checkpoint(path)
    msg = str(err.value)
    assert "weights-only" in msg and str(path) in msg
    with pytest.raises(MtardError, match="weights-only"):
        ckpt.read(path)


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(digits_model("mlp"), path)  # the classic "torch.save(model)"
    with pytest.raises(MtardError, match="weights-only"):
        ckpt.read(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MtardError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nowhere.pt")


@pytest.mark.parametrize("kind", ["text", "empty", "truncated"])
def test_corrupt_file_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    good = tmp_path / "good.pt"
    ckpt.save(good, {"model": spec("mlp"), "state_dict": digits_model("mlp").state_dict()})
    data = {"text": b"hello, I am not a checkpoint\n", "empty": b"", "truncated": good.read_bytes()[:500]}[kind]
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(data)
    with pytest.raises(MtardError, match="not a readable PyTorch checkpoint") as err:
        ckpt.load_checkpoint(path)
    assert str(path) in str(err.value)


def test_non_dict_payload(tmp_path: Path) -> None:
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(MtardError, match="expected a dict"):
        ckpt.read(lst)


def test_bare_state_dict_has_no_architecture(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(digits_model("mlp").state_dict(), path)
    with pytest.raises(MtardError, match="records no architecture"):
        ckpt.load_checkpoint(path)
    with pytest.raises(MtardError, match="no model spec"):
        ckpt.spec_of(path)


def test_package_exports_load_checkpoint() -> None:
    import mtard
    from mtard.checkpoint import load_checkpoint

    assert mtard.load_checkpoint is load_checkpoint


def test_old_file_without_bn_batch_counters_loads(tmp_path: Path) -> None:
    """PyTorch <= 0.4.1 state dicts (TRADES/RSLAD WRN-34-10) have no BN num_batches_tracked."""
    model = digits_model("small_cnn")
    model.train()
    with torch.no_grad():  # non-default running statistics, so a silent non-load would show
        model(torch.rand(16, 1, 8, 8))
    old = collections.OrderedDict((k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    dropped = len(model.state_dict()) - len(old)
    assert dropped > 0  # the architecture has BN layers, so the test means something
    path = tmp_path / "old.pt"
    torch.save(old, path, _use_new_zipfile_serialization=False)  # the pre-1.6 file format too
    fresh = digits_model("small_cnn")
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    ckpt.load_weights(fresh, ckpt.state_dict_of(ckpt.read(path)), arch="small_cnn", source=path)
    for key, value in old.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    counters = [v for k, v in fresh.state_dict().items() if k.endswith("num_batches_tracked")]
    assert len(counters) == dropped and all(int(c) == 0 for c in counters)  # the fresh model's own value


def test_missing_non_counter_keys_are_still_refused(tmp_path: Path) -> None:
    model = digits_model("small_cnn")
    partial = {k: v for k, v in model.state_dict().items() if not k.endswith("running_var")}
    with pytest.raises(MtardError, match="missing keys: .*running_var"):
        ckpt.load_weights(digits_model("small_cnn"), partial, arch="small_cnn", source="x.pt")
