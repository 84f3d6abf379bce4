"""Robust accuracy of one trained model under PGD-20 run in bf16 autocast vs in fp32.

A bf16 attack follows rounded gradients and a bf16 forward rounds the logits that decide each
verdict; if the bf16 figure comes out higher, a bf16 evaluation overstates robustness (which is why
reported numbers come from fp32 attacks). It prints, on the digits validation split:

* fp32: the attack and the final prediction in fp32;
* bf16: both under `torch.autocast(<device>, bfloat16)` (the mechanism of `runtime.bf16`;
  CPU autocast to bf16 exercises it without a GPU, the GPU gives the real figure);
* bf16 attack, fp32 verdict: the bf16 adversarial examples judged by the fp32 model, which
  separates a weaker attack from a rounded verdict;

plus the clean accuracy in both precisions and how many samples change verdict. Every attack
starts from the same seeded uniform start (the SAT-style PGD-20 of `mtard evaluate`, digits ε 0.2,
step 0.05). Without `--checkpoint` it first trains a small_cnn with PGD-AT (SAT) on digits.

Usage::

    python benchmarks/bf16_robustness.py --out runs/bf16 --threads 1
    python benchmarks/bf16_robustness.py --out /tmp/x --checkpoint runs/my_run/checkpoint.pt --device cuda
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from mtard import checkpoint as ckpt
from mtard.attacks import pgd
from mtard.config import load_config
from mtard.data import load_splits
from mtard.loop import train_local


def train_model(out: Path, *, epochs: int, device: str) -> Path:
    cfg = load_config("digits", [
        f"out_dir={out}", "name=sat_small_cnn", "method.name=sat", f"optim.epochs={epochs}", "optim.milestones=[]",
        "eval.pgd_steps=0", "runtime.progress=false", f"runtime.device={device}",
    ])
    train_local(cfg)
    return cfg.run_dir / "checkpoint.pt"


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: torch.device, bf16: bool) -> torch.Tensor:
    with _autocast(device, bf16):
        return model(x).argmax(1)


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device, eps: float, step_size: float, steps: int, seed: int) -> dict:
    model.eval()
    adv = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(seed)  # the same uniform start for both precisions
        with _autocast(device, bf16):
            adv[name] = pgd(model, x, y, eps=eps, step_size=step_size, steps=steps, start="uniform")
    robust = {
        "fp32": _predict(model, adv["fp32"], device, False) == y,
        "bf16": _predict(model, adv["bf16"], device, True) == y,
        "bf16_attack_fp32_verdict": _predict(model, adv["bf16"], device, False) == y,
    }
    n = len(y)
    return {
        "samples": n,
        "clean_acc": {"fp32": (_predict(model, x, device, False) == y).float().mean().item(),
                      "bf16": (_predict(model, x, device, True) == y).float().mean().item()},
        "pgd_acc": {k: v.float().mean().item() for k, v in robust.items()},
        "verdicts_changed": int((robust["fp32"] != robust["bf16"]).sum().item()),
        "max_abs_diff_adv": (adv["fp32"] - adv["bf16"]).abs().max().item(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for the trained model (when needed) and bf16_robustness.json")
    ap.add_argument("--checkpoint", default="", help="a digits checkpoint to attack (default: train one under --out)")
    ap.add_argument("--epochs", type=int, default=8, help="SAT epochs when training the model")
    ap.add_argument("--device", default="cpu", help="cpu (bf16 autocast on CPU: the mechanism) or cuda (the real figure)")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    path = Path(args.checkpoint) if args.checkpoint else train_model(out, epochs=args.epochs, device=args.device)
    model = ckpt.load_checkpoint(path, map_location=device).to(device)
    cfg = load_config("digits")
    val = load_splits(cfg.data).val
    x = torch.stack([val[i][0] for i in range(len(val))]).to(device)
    y = torch.tensor([int(val[i][1]) for i in range(len(val))], device=device)
    e = cfg.eval
    res = measure(model, x, y, device=device, eps=e.eps, step_size=e.pgd_step_size, steps=args.steps, seed=args.seed)
    res.update(checkpoint=str(path), device=str(device), eps=e.eps, step_size=e.pgd_step_size, steps=args.steps, torch=torch.__version__,
               device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    (out / "bf16_robustness.json").write_text(json.dumps(res, indent=1))
    c, r = res["clean_acc"], res["pgd_acc"]
    print(f"# PGD-{args.steps} (eps {e.eps:g}, step {e.pgd_step_size:g}, uniform start) on {res['samples']} digits validation images, "
          f"device {res['device_name']}, model {path}")
    print(f"| precision                   | clean acc | PGD-{args.steps} acc |")
    print("|-----------------------------|-----------|------------|")
    print(f"| fp32                        | {c['fp32']:9.4f} | {r['fp32']:10.4f} |")
    print(f"| bf16 autocast               | {c['bf16']:9.4f} | {r['bf16']:10.4f} |")
    print(f"| bf16 attack, fp32 verdict   | {'':9} | {r['bf16_attack_fp32_verdict']:10.4f} |")
    print(f"verdicts changed fp32 -> bf16: {res['verdicts_changed']} of {res['samples']}; "
          f"max |x_adv(fp32) - x_adv(bf16)|: {res['max_abs_diff_adv']:.4g}")


if __name__ == "__main__":
    main()
