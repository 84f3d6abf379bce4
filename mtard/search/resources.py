"""What one trial reserves, and how many trials run at once.

Two kinds of trial (see `mtard.search.tune_adapter`):

* A *direct* trial (`resources.workers: 1`, the default) is one Tune trial process that runs the
  epoch loop itself: it reserves exactly one worker's resources (CPUs, GPUs including fractions,
  custom resources, the accelerator type) through `tune.with_resources`.
* A *Ray Train* trial (`workers > 1`, or `ray_train: true`) is a tiny trial driver that starts a
  Ray Train run; Tune reserves only the driver, and Train reserves the workers' placement group.
  If the cluster defines the custom resource `mtard_driver` (the cluster.yaml head does, and so
  does a local Ray started by `mtard search`), a driver asks for `{"CPU": 0, "mtard_driver":
  0.01}`: it stays on the head and takes no CPU from the workers; otherwise 0.01 CPU.

`max_concurrent` (when the space leaves it null) = how many trials fit in the cluster's
CPUs/GPUs/custom resources, counting what the autoscaler may add, capped by num_samples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mtard.errors import MtardError

if TYPE_CHECKING:  # annotations only: the planning stays pure (no torch, no Ray)
    from mtard.search.space import SearchSpace

DRIVER_RESOURCE = "mtard_driver"
DRIVER_SHARE = 0.01  # of mtard_driver (or of a CPU when the cluster has no mtard_driver)
LOCAL_DRIVER_UNITS = 1000  # mtard_driver units a local Ray started by `mtard search` offers


def uses_ray_train(space: SearchSpace) -> bool:
    return space.resources["workers"] > 1 or bool(space.resources["ray_train"])


def worker_resources(space: SearchSpace) -> dict[str, float]:
    """One worker's reservation (a direct trial's whole reservation), Ray's resource names."""
    r = space.resources
    shape = {"CPU": float(r["cpus_per_worker"]), "GPU": float(r["gpus_per_worker"]), **r["custom"]}
    if r["accelerator_type"]:
        shape[f"accelerator_type:{r['accelerator_type']}"] = 0.001  # how Ray itself asks for a GPU model
    return {k: v for k, v in shape.items() if v > 0}


def driver_resources(capacity: dict[str, float]) -> dict[str, float]:
    """A Ray Train trial's driver reservation."""
    if capacity.get(DRIVER_RESOURCE, 0) > 0:
        return {"CPU": 0, DRIVER_RESOURCE: DRIVER_SHARE}
    return {"CPU": DRIVER_SHARE}


def trial_resources(space: SearchSpace, capacity: dict[str, float]) -> dict[str, float]:
    """What Tune reserves for one trial (`tune.with_resources`)."""
    return driver_resources(capacity) if uses_ray_train(space) else worker_resources(space)


def trial_demand(space: SearchSpace, capacity: dict[str, float]) -> dict[str, float]:
    """Everything one trial holds while it runs (a Ray Train trial: its driver and all its workers)."""
    if not uses_ray_train(space):
        return worker_resources(space)
    workers = space.resources["workers"]
    demand = {k: workers * v for k, v in worker_resources(space).items()}
    for k, v in driver_resources(capacity).items():
        demand[k] = demand.get(k, 0.0) + v
    return {k: v for k, v in demand.items() if v > 0}


def plan_concurrency(space: SearchSpace, capacity: dict[str, float], shapes: list[dict[str, float]]) -> int:
    """Check one trial fits the cluster (`shapes`: each node's resources); return how many run at once."""
    r = space.resources
    worker = worker_resources(space)
    have = ", ".join(f"{k} {v:g}" for k, v in sorted(capacity.items()) if k in ("CPU", "GPU", *r["custom"])) or "nothing"
    if shapes and not any(all(s.get(k, 0) + 1e-9 >= v for k, v in worker.items()) for s in shapes):
        raise MtardError(
            f"resources: no node can hold one worker ({', '.join(f'{k} {v:g}' for k, v in worker.items())}); "
            f"the cluster has {have}: lower resources.cpus_per_worker / gpus_per_worker"
        )
    fits = []
    for k, v in trial_demand(space, capacity).items():
        total = capacity.get(k, 0.0)
        if total + 1e-9 < v:
            raise MtardError(
                f"resources: one trial needs {k} {v:g} ({r['workers']} worker(s) × resources) but the cluster has "
                f"at most {total:g} (it has {have}); lower resources or use a bigger cluster (--address)"
            )
        fits.append(int(math.floor(total / v + 1e-9)))
    n = min(fits) if fits else space.num_samples
    if space.max_concurrent is not None:
        n = space.max_concurrent
    return max(1, min(n, space.num_samples))

