"""Checkpoint files: one format for students, teachers and resumable runs.

A checkpoint is a plain dict saved with `torch.save` and always read back with
`torch.load(..., weights_only=True)`: checkpoints are untrusted files (teachers
are downloaded from the internet), and the weights-only unpickler cannot run code.
So everything inside is tensors, numbers, strings, lists and dicts.

    {"format": FORMAT,
     "model": {"arch", "num_classes", "in_channels", "image_size", "dataset"},
     "state_dict": {...},
     ... run state when written by the trainer: "epoch", "optimizer", "method" (the
     method's own state, e.g. its balance), "rng", "config", "metrics"}

Foreign checkpoints (the TRADES/RSLAD WideResNet files) are bare state dicts; the
teacher catalog supplies their architecture.
"""

from __future__ import annotations

import errno
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtard.errors import MtardError
from mtard.runs import CHECKPOINT_FILE as CHECKPOINT_FILE  # the run folder's layout lives in mtard.runs
from mtard.storage import atomic_write

FORMAT = "mtard-checkpoint-1"


def model_spec(arch: str, *, num_classes: int, in_channels: int, image_size: int, dataset: str) -> dict:
    return {"arch": arch, "num_classes": num_classes, "in_channels": in_channels, "image_size": image_size, "dataset": dataset}


def save(path: str | Path, payload: dict) -> None:
    """Write atomically: a crash mid-write never destroys the previous good checkpoint."""
    def write(tmp: Path) -> None:
        # Through a Python file: a failed write raises OSError with its errno (torch's own
        # writer would report ENOSPC as "enforce fail at inline_container.cc").
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)

    try:
        atomic_write(path, write)
    except OSError as err:
        why = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise MtardError(f"could not write checkpoint {path}: {why}; the previous checkpoint there (if any) is kept") from err


def _first_line(err: BaseException) -> str:
    lines = str(err).splitlines()
    return lines[0] if lines and lines[0] else type(err).__name__


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise MtardError(f"checkpoint {path} does not exist: check the path (or train it first)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests weights_only=False, i.e. running the file's code: never repeat
        # that. Only an "Unsupported global" means a real pickle that names code; anything else
        # (random bytes, an unknown opcode) is just not a checkpoint.
        needs = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
        if not needs:
            raise MtardError(f"{path} is not a readable PyTorch checkpoint (not a weights-only pickle or zip file)") from err
        raise MtardError(
            f"{path} is not a weights-only checkpoint (it would need to run code to load: {needs[0]}): "
            f"re-save it as a plain state dict where it was made"
        ) from err
    except Exception as err:  # garbage fails in many ways: KeyError (text), EOFError (empty), RuntimeError (truncated zip)
        raise MtardError(f"{path} is not a readable PyTorch checkpoint ({_first_line(err)})") from err
    if not isinstance(payload, dict):
        raise MtardError(f"{path}: expected a dict (a state dict or an mtard checkpoint), got {type(payload).__name__}")
    return payload


def state_dict_of(payload: dict) -> dict[str, torch.Tensor]:
    """The weights inside an mtard checkpoint or a foreign file (bare / {'state_dict': ...} / {'model': ...})."""
    for key in ("state_dict", "model_state_dict", "model"):
        inner = payload.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """DDP/DataParallel checkpoints name every key `module.…`."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _sample(keys: list[str], limit: int = 5) -> str:
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _untracked_batch_counts(model: nn.Module, missing: list[str]) -> list[str]:
    """The missing keys that are BatchNorm `num_batches_tracked` buffers.

    PyTorch <= 0.4.1 had no such buffer, so files of that age (the TRADES/RSLAD WRN-34-10)
    lack it; torch's own loader accepts them and keeps the module's counter. The counter
    only matters for BN with momentum=None (cumulative average), which no model here uses.
    """
    out = []
    for key in missing:
        owner, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked" and isinstance(model.get_submodule(owner), nn.modules.batchnorm._NormBase):
            out.append(key)
    return out


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, arch: str, source: str | Path) -> None:
    """Strict load with a message that names the mismatch and the expected architecture.

    Strict except for BatchNorm `num_batches_tracked` counters absent from old files, which
    keep the model's own value (as `torch.nn.Module.load_state_dict` does for such files).
    """
    state_dict = strip_prefix(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    old_format = _untracked_batch_counts(model, missing)
    if old_format:
        state_dict = {**state_dict, **{k: expected[k] for k in old_format}}
        missing = [k for k in missing if k not in old_format]
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_sample(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_sample(unexpected)}")
        raise MtardError(
            f"{source} does not match architecture {arch!r} ({'; '.join(parts)}); "
            f"set the right `arch` for this file (see `mtard teachers list`)"
        )
    wrong = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise MtardError(
            f"{source} does not match architecture {arch!r}: {k} has shape {tuple(state_dict[k].shape)}, "
            f"the model expects {tuple(expected[k].shape)} ({len(wrong)} tensors differ); "
            f"check the architecture and the number of classes"
        )
    model.load_state_dict(state_dict, strict=True)


def build_from_spec(spec: dict) -> nn.Module:
    from mtard.models import build_model

    return build_model(spec["arch"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], image_size=spec["image_size"])


def model_from_payload(payload: dict, source: str | Path) -> nn.Module:
    """Rebuild the model a checkpoint payload records (architecture, classes) and load its weights (eval mode)."""
    spec = payload.get("model")
    if not isinstance(spec, dict) or "arch" not in spec:
        raise MtardError(
            f"{source} records no architecture (a bare state dict?): add it to the teacher catalog with its `arch`, "
            f"or load it with mtard.checkpoint.load_weights(build_model(...), ...)"
        )
    bad = [key for key in ("num_classes", "in_channels", "image_size")
           if not (isinstance(spec.get(key), int) and not isinstance(spec.get(key), bool) and spec[key] >= 1)]
    if bad or not isinstance(spec["arch"], str):
        field = bad[0] if bad else "arch"
        raise MtardError(
            f"{source}: its model spec has no valid {field!r} ({spec.get(field)!r}); it was not written by mtard "
            f"or was damaged: re-save it with mtard.checkpoint.model_spec(...), or use a checkpoint mtard wrote"
        )
    model = build_from_spec(spec)
    load_weights(model, state_dict_of(payload), arch=spec["arch"], source=source)
    return model.eval()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model an mtard checkpoint file records and load its weights (eval mode)."""
    return model_from_payload(read(path, map_location), path)


def spec_of(path: str | Path) -> dict[str, Any]:
    spec = read(path).get("model")
    if not isinstance(spec, dict):
        raise MtardError(f"{path} records no model spec; it was not written by mtard")
    return spec
