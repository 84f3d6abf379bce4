"""BatchNorm with several workers: SyncBatchNorm exactly on CUDA with > 1 worker.

The CPU test checks the decision and the conversion; the known-answer test (two GPUs, skipped
elsewhere) checks that one DDP step of 2 workers with the converted student equals one step of a
single process on the same global batch — BN running statistics and weights alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mtard.config import TrainConfig
from mtard.distributed import prepare_batchnorm, wants_sync_batchnorm
from mtard.models import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)


def _count(model: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


@pytest.mark.parametrize("device, workers, enabled, expected", [
    (CPU, 1, True, False), (CPU, 2, True, False), (CPU, 4, True, False),
    (CUDA, 1, True, False), (CUDA, 2, True, True), (CUDA, 8, True, True),
    (CUDA, 2, False, False),
])
def test_sync_batchnorm_exactly_on_cuda_with_several_workers(device, workers, enabled, expected) -> None:
    assert wants_sync_batchnorm(device, workers, enabled) is expected
    model = _small_cnn()
    bn = _count(model, nn.BatchNorm2d)
    assert bn > 0  # the student has BN layers, so the conversion is visible
    out = prepare_batchnorm(model, device, workers, enabled)  # converting needs no GPU
    assert _count(out, nn.SyncBatchNorm) == (bn if expected else 0)
    assert _count(out, nn.BatchNorm2d) == (0 if expected else bn)
    assert out.state_dict().keys() == _small_cnn().state_dict().keys()  # checkpoints keep their keys


def test_sync_batchnorm_is_on_by_default() -> None:
    assert TrainConfig().scaling.sync_batchnorm is True


# ---------------------------------------------------------------- two GPUs


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    # TF32 convolutions would round a 16-image and a 32-image batch differently.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    model.train()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _worker(rank: int, world_size: int, init_file: str, out: str, enabled: bool) -> None:
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        model = prepare_batchnorm(_small_cnn(), device, world_size, enabled).to(device)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[rank])
        x, y = _global_batch()
        n = len(x) // world_size  # data.batch_size is global: each worker takes its share
        _step(ddp, x[rank * n : (rank + 1) * n].to(device), y[rank * n : (rank + 1) * n].to(device))
        if rank == 0:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out)
    finally:
        dist.destroy_process_group()


def _two_workers(tmp_path: Path, enabled: bool) -> dict[str, torch.Tensor]:
    out = tmp_path / f"two_{enabled}.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / f"init_{enabled}"), str(out), enabled), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_workers_step_like_one_process(tmp_path: Path) -> None:
    one = _small_cnn().to(CUDA)
    x, y = _global_batch()
    _step(one, x.to(CUDA), y.to(CUDA))
    expected = {k: v.cpu() for k, v in one.state_dict().items()}

    synced = _two_workers(tmp_path, enabled=True)
    for key, value in expected.items():
        torch.testing.assert_close(synced[key].to(value.dtype), value, rtol=1e-4, atol=1e-5, msg=key)
    # The control: per-worker BN sees 16 images per layer, and its running statistics differ.
    local = _two_workers(tmp_path, enabled=False)
    stats = [k for k in expected if k.endswith("running_var")]
    assert any(not torch.allclose(local[k], expected[k], rtol=1e-4, atol=1e-5) for k in stats)
