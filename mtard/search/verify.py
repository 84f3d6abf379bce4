"""`mtard evaluate-front`: the front's checkpoints on the TEST split, beside the validation
numbers the search selected them on."""

from __future__ import annotations

import json
from pathlib import Path

from mtard.errors import MtardError
from mtard.search.files import VERIFIED_DIR
from mtard.search.records import Objective
from mtard.search.render import csv_text
from mtard.storage import atomic_write, first_missing, json_safe, local_file, remove_empty_folders

#: Attacks `evaluate_front` runs by default (the papers' test-set table).
VERIFY_ATTACKS = ["clean", "pgd20_sat", "pgd20_trades", "cw", "autoattack"]


def _local_checkpoint(location: str, exp_dir: Path, cache: Path) -> Path:
    """A local path for a checkpoint recorded as a path (relative ones also from the experiment folder) or a URI."""
    path = local_file(location, cache)
    if not path.is_absolute() and not path.exists() and (exp_dir / path).exists():
        path = exp_dir / path
    return path


def evaluate_front(
    exp_dir: Path,
    *,
    attacks: list[str] | None = None,
    max_samples: int = 0,
    device: str = "auto",
    data_root: str | None = None,
    batch_size: int = 256,
) -> Path:
    """Evaluate every front member's checkpoint on the TEST split; write pareto_verified.{json,csv}.

    Reads ``<exp_dir>/pareto.json`` (written by `write_review`). Each member's report from
    `mtard.evaluate.evaluate_checkpoint` also lands in ``<exp_dir>/verified/<trial>.eval-test.json``.
    A member whose checkpoint is missing or unreadable is recorded with its error and the
    others still run; if none can be evaluated, `MtardError`. Returns the JSON path.
    """
    from mtard.evaluate import check_attacks

    front, objectives = read_front(Path(exp_dir))
    names = check_attacks(list(attacks) if attacks is not None else list(VERIFY_ATTACKS))
    report = verify_front(
        Path(exp_dir), front, objectives, names, max_samples=max_samples, device=device, data_root=data_root, batch_size=batch_size
    )
    return write_verified(Path(exp_dir), report)


def read_front(exp_dir: Path) -> tuple[list[dict], list[Objective]]:
    """The front members and objectives of ``<exp_dir>/pareto.json``; one clear error if it is missing, damaged or empty."""
    source = exp_dir / "pareto.json"
    if not source.is_file():
        raise MtardError(
            f"{source} does not exist: point at an experiment directory written by `mtard search` (e.g. runs/<name>)"
        )
    try:
        doc = json.loads(source.read_text())
        front, objectives = doc["front"], [Objective.from_dict(o) for o in doc["objectives"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise MtardError(
            f"{source} is not a pareto.json written by `mtard search` ({type(err).__name__}: {err}); "
            f"rewrite it by resuming the search (mtard search --resume {exp_dir})"
        ) from err
    if not front:
        raise MtardError(f"{source} has an empty front: no trial completed its budget yet")
    return front, objectives


def verify_front(exp_dir: Path, front: list[dict], objectives: list[Objective], names: list[str], **evaluation) -> dict:
    """The verification report (the content of pareto_verified.json): each member's validation numbers
    beside its test accuracies under the attacks `names`, or the error that stopped its evaluation.
    `evaluation`: `evaluate_checkpoint`'s max_samples, device, data_root, batch_size."""
    created = first_missing(exp_dir / VERIFIED_DIR)
    members = [_verify_member(m, exp_dir, names, evaluation) for m in front]
    if not any("test" in e for e in members):
        if created is not None:  # a failed start leaves no empty folders behind
            remove_empty_folders(created)
        raise MtardError(f"no front member could be evaluated: {members[0].get('error')}")
    descriptions: dict[str, str] = {}
    for e in members:
        for attack, text in e.get("descriptions", {}).items():
            descriptions.setdefault(attack, text)
    return {
        "experiment": str(exp_dir),
        "split": "test",
        "objectives": [o.to_dict() for o in objectives],
        "attacks": [{"attack": a, "description": descriptions.get(a, "")} for a in names],
        "members": members,
    }


def _verify_member(m: dict, exp_dir: Path, names: list[str], evaluation: dict) -> dict:
    from mtard.evaluate import evaluate_checkpoint

    verified_dir = exp_dir / VERIFIED_DIR
    entry = {k: m.get(k) for k in ("trial_id", "method", "teachers", "params", "is_default", "checkpoint")}
    entry["val"] = dict(m.get("objectives", {}))
    try:
        if not m.get("checkpoint"):
            raise MtardError("the trial recorded no checkpoint")
        path = _local_checkpoint(m["checkpoint"], exp_dir, verified_dir / "checkpoints" / m["trial_id"])
        report = evaluate_checkpoint(path, split="test", attacks=names, out=verified_dir / f"{m['trial_id']}.eval-test.json", **evaluation)
    except MtardError as err:
        entry["error"] = str(err)
        return entry
    entry.update(
        split=report["split"], dataset=report["dataset"], eps=report["eps"], samples=report["samples"],
        test={r["attack"]: r["accuracy"] for r in report["results"]},
        test_interval={r["attack"]: r["interval_95"] for r in report["results"]},
        descriptions={r["attack"]: r["description"] for r in report["results"]},
    )
    return entry


def write_verified(exp_dir: Path, report: dict) -> Path:
    """pareto_verified.json (the report) and pareto_verified.csv (one row per member and attack); returns the JSON path."""
    objectives = [Objective.from_dict(o) for o in report["objectives"]]
    names = [a["attack"] for a in report["attacks"]]
    json_path = exp_dir / "pareto_verified.json"
    atomic_write(json_path, json.dumps(json_safe(report), indent=2, ensure_ascii=False) + "\n")
    header = ["trial_id", "method", "is_default"] + [f"val:{o.metric}" for o in objectives]
    header += ["attack", "description", "test_accuracy", "test_ci_low", "test_ci_high", "samples", "eps", "checkpoint", "error"]
    rows = []
    for e in report["members"]:
        head = [e["trial_id"], e["method"], e["is_default"]] + [e["val"].get(o.metric) for o in objectives]
        if "test" not in e:
            rows.append(head + ["", "", None, None, None, None, None, e["checkpoint"], e["error"]])
            continue
        for a in names:
            rows.append(head + [a, e["descriptions"][a], e["test"][a], *e["test_interval"][a], e["samples"], e["eps"], e["checkpoint"], ""])
    atomic_write(exp_dir / "pareto_verified.csv", csv_text(header, rows))
    return json_path
