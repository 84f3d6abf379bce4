"""`runtime.compile`: the student and the teachers run through torch.compile, in place.

On CPU torch.compile's inductor builds C++ kernels, so these need a C++ compiler; they are slow
(compilation takes tens of seconds) and marked so.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from mtard import checkpoint as ckpt
from mtard.loop import train_local

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                                   reason="torch.compile on CPU needs a C++ compiler")]


def test_compiled_mtard_run_trains_and_writes_a_plain_checkpoint(make_cfg, trained_teachers) -> None:
    runs = {}
    for compiled in ("false", "true"):
        cfg = make_cfg("mtard", f"runtime.compile={compiled}", "eval.max_samples=64", catalog=trained_teachers, name=f"compile_{compiled}")
        runs[compiled] = (train_local(cfg), cfg.run_dir / "checkpoint.pt")
    (eager, eager_path), (compiled, compiled_path) = runs["false"], runs["true"]
    eager_state, compiled_state = ckpt.read(eager_path)["state_dict"], ckpt.read(compiled_path)["state_dict"]
    # nn.Module.compile works in place: the checkpoint has the plain keys (no `_orig_mod.`) and loads as usual.
    assert compiled_state.keys() == eager_state.keys()
    ckpt.load_checkpoint(compiled_path)
    # Same computation, other kernels: the runs agree closely, not bit for bit.
    assert math.isfinite(compiled["loss"]) and compiled["loss"] == pytest.approx(eager["loss"], rel=1e-3)
    for k, v in eager_state.items():
        torch.testing.assert_close(compiled_state[k], v, rtol=1e-3, atol=1e-4)
