"""`mtard confirm-front EXP_DIR`: retrain a search's front at a stated budget over seeds, on the
test split, beside the official-defaults trial and baselines trained the same way.

One Ray Tune experiment, one trial per member × seed, on the search's machinery: a *direct*
one-worker trial (`mtard.search.tune_adapter.TuneContext`: each epoch's checkpoint through Tune,
reused trial processes, no Ray Train start-up), the space's resources, teachers staged where every
node fetches them (`mtard.staging`), `--address` / `--storage`, and `--resume` after a crash
(`Tuner.restore`: a finished run is neither retrained nor lost; a run that was training continues
from its last epoch). After its last epoch a trial evaluates its model on the TEST split with the
attack suite (`mtard.evaluate.evaluate_checkpoint`) and reports the accuracies as its final result.

What a run trains (`run_config`): the member's searched values read back from its record, on the
search's fixed config (`SearchSpace.trial_config`); `runtime.seed` = the run's seed (model
initialisation and data order; the train/validation split is `data.split_seed`, the search's);
epochs = the base config's full schedule, or `--epochs N` with the milestones scaled as a search's
budget scales them (`budget.scale_milestones`). A baseline is the fixed config with `method.name`
swapped. MO-ASHA is off: every run trains its whole budget.

Files, in `<exp>/confirm/` (or `<storage>/<exp name>-confirm/`): plan.json (what is confirmed;
--resume reads it), runs.jsonl (one fsync'ed line per finished run), checkpoints.json, Tune's
state and `run-<member>-s<seed>/` trial folders, and the results (`mtard.search.confirm_render`):
confirmed.json, confirmed.csv, confirmed.md and the TensorBoard run `review/`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from mtard.config import TrainConfig, set_path, validate_config
from mtard.errors import MtardError
from mtard.runs import CHECKPOINTS_TO_KEEP, failure_report
from mtard.search.confirm_review import BASELINE, CHOSEN, DEFAULTS, FRONT, ConfirmData, Member, RunResult, compute_confirm, objective_attacks
from mtard.search.files import SPACE, ExperimentFiles
from mtard.search.lock import hold_experiment
from mtard.search.records import Objective, classify, finite, read_records, trained_budget
from mtard.search.space import SearchSpace, load_space
from mtard.search.tune_adapter import TUNE_KEYS, SearchProgress
from mtard.storage import absolute, append_line, atomic_write, check_writable, download_missing, json_safe, read_json_lines

CONFIRM_NAME = "confirm"
PLAN = "plan.json"
RUNS = "runs.jsonl"
CONFIRM_FILES = (PLAN, RUNS, "checkpoints.json", "confirmed.json", "confirmed.csv", "confirmed.md")
BASELINE_METHODS = ("sat", "trades", "ard", "rslad")
TEST_PREFIX = "test_"  # a run's reported test accuracy of attack a: test_<a>
SAMPLES_KEY = "test_samples"


@dataclasses.dataclass
class Plan:
    """What a confirmation trains and evaluates (plan.json)."""

    members: list[Member]
    seeds: list[int]
    epochs: int
    attacks: list[str]
    max_samples: int
    batch_size: int

    def run_ids(self) -> list[str]:
        return [run_id(m.member_id, s) for m in self.members for s in self.seeds]

    def to_dict(self) -> dict:
        return {"members": [m.to_dict() for m in self.members], "seeds": self.seeds, "epochs": self.epochs,
                "attacks": self.attacks, "max_samples": self.max_samples, "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls([Member(**m) for m in d["members"]], list(d["seeds"]), int(d["epochs"]), list(d["attacks"]),
                   int(d["max_samples"]), int(d["batch_size"]))


def run_id(member_id: str, seed: int) -> str:
    return f"{member_id}-s{seed}"


# ---------------------------------------------------------------- what is confirmed


def load_search(exp_dir: Path) -> tuple[SearchSpace, dict, list]:
    """The search's space, pareto.json and records; MtardError when `exp_dir` is not a search."""
    exp_dir = Path(exp_dir)
    missing = [n for n in (SPACE, "pareto.json") if not (exp_dir / n).is_file()]
    if missing:
        raise MtardError(
            f"{exp_dir} is not a search (no {missing[0]} there): point confirm-front at an experiment directory "
            f"written by `mtard search`, e.g. runs/digits_tiny"
        )
    try:
        pareto = json.loads((exp_dir / "pareto.json").read_text())
    except ValueError as err:
        raise MtardError(f"{exp_dir / 'pareto.json'} is not JSON ({err}); rewrite it with mtard search --resume {exp_dir}") from err
    return load_space(exp_dir / SPACE), pareto, read_records(exp_dir / "records.jsonl")


def plan_members(space: SearchSpace, pareto: dict, records: list, member_ids: list[str] | None, baselines: list[str]) -> list[Member]:
    """The proxy front (or `member_ids`), the official-defaults trial, then the baselines."""
    objectives = [Objective.from_dict(o) for o in pareto["objectives"]]
    by_id = {r.trial_id: r for r in records}
    front_ids = [m["trial_id"] for m in pareto.get("front", [])]
    if member_ids is None:
        if not front_ids:
            raise MtardError("the search's front is empty (no trial completed its budget yet): finish it "
                             "(mtard search --resume EXP_DIR), or name trials with --members ID,...")
        chosen = front_ids
    else:
        unknown = [m for m in member_ids if m not in by_id]
        if unknown:
            raise MtardError(f"--members: no trial {unknown[0]!r} in this search; its trials: {', '.join(by_id) or 'none'}")
        chosen = list(dict.fromkeys(member_ids))

    def member(r, kind: str) -> Member:
        return Member(r.trial_id, kind, r.method, dict(r.params), {o.metric: r.metrics.get(o.metric) for o in objectives},
                      bool(r.is_default))

    members = [member(by_id[tid], FRONT if tid in front_ids else DEFAULTS if by_id[tid].is_default else CHOSEN) for tid in chosen]
    defaults = [r for r in records if r.is_default and r.trial_id not in chosen]
    members += [member(r, DEFAULTS) for r in defaults[:1]]  # the reference point, even when it diverged or is off the front
    for method in baselines:
        if method not in BASELINE_METHODS:
            raise MtardError(f"--baselines: unknown method {method!r}; choose from {','.join(BASELINE_METHODS)}")
        members.append(Member(f"baseline-{method}", BASELINE, method, {}, {}, False))
    return members


def confirm_space(space: SearchSpace, epochs: int) -> SearchSpace:
    """The search's space at the confirmation budget: milestones scaled as the search scales them, no scheduler."""
    return dataclasses.replace(space, budget={"epochs": int(epochs), "scale_milestones": True, "time_budget_s": None},
                               scheduler={"name": "none"})


def run_config(space: SearchSpace, member: Member, seed: int, epochs: int) -> TrainConfig:
    """The TrainConfig of one member × seed (validated)."""
    at_budget = confirm_space(space, epochs)
    if member.kind == BASELINE:
        cfg = at_budget.trial_config({}, name=run_id(member.member_id, seed))
        set_path(cfg, "method.name", member.method)
    else:
        cfg = at_budget.trial_config(member.params, name=run_id(member.member_id, seed))
    cfg.runtime.seed = int(seed)
    validate_config(cfg)
    return cfg


# ---------------------------------------------------------------- the trial


def make_confirm_trial(configs: dict[str, TrainConfig], newest: dict[str, dict], attacks: list[str], max_samples: int, batch_size: int):
    """The Tune trainable of one member × seed: train (or find it trained), then evaluate on test."""
    from ray import tune

    from mtard import checkpoint as ckpt
    from mtard.loop import resolve_device
    from mtard.search.tune_adapter import TuneContext

    class ConfirmContext(TuneContext):
        """A direct trial's context that keeps the last and the selected epoch's payload for the test."""

        def __init__(self, device, newest: dict | None = None):
            super().__init__(device, newest)
            self.last: dict | None = None  # the last epoch's checkpoint payload
            self.best: dict | None = None  # the selected epoch's (eval.select: best)
            self.metrics: dict = {}  # the last reported metrics

        def report(self, metrics, payload):
            self.metrics = dict(metrics)
            if payload is not None:
                self.last = payload
            super().report(metrics, payload)

        def save_best(self, payload):
            self.best = payload
            super().save_best(payload)

    def confirm_trial(config: dict) -> None:
        from mtard.distributed import fit_reporting_divergence
        from mtard.evaluate import evaluate_checkpoint

        key = config["run"]
        cfg = copy.deepcopy(configs[key])
        device = resolve_device("cuda" if cfg.scaling.gpus_per_worker > 0 else "cpu")
        trial_id = tune.get_context().get_trial_id()
        ctx = ConfirmContext(device, newest.get(trial_id))
        try:
            state = ctx.latest_checkpoint()
            if state is not None and trained_budget(int(state["metrics"].get("epoch") or 0), cfg.optim.epochs):
                # Trained before a crash: evaluate what it trained, train nothing.
                metrics, last = dict(state["metrics"]), state
                best = ctx.stored_best() if cfg.eval.select == "best" else None
            else:
                fit_reporting_divergence(cfg, ctx)
                if ctx.metrics.get("diverged"):
                    return
                metrics, last, best = ctx.metrics, ctx.last, ctx.best
            model = best if (cfg.eval.select == "best" and best is not None) else last
            if model is None:
                raise MtardError("the run saved no checkpoint to evaluate")
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.pt"
                ckpt.save(path, model)
                report = evaluate_checkpoint(path, split="test", attacks=attacks, max_samples=max_samples, device=str(device),
                                             batch_size=batch_size, out=Path(folder) / "eval-test.json")
            test = {TEST_PREFIX + r["attack"]: r["accuracy"] for r in report["results"]}
            tune.report({**{k: v for k, v in metrics.items() if k != "replayed"}, **test, SAMPLES_KEY: report["samples"],
                         "evaluated_epoch": int(model.get("epoch", metrics.get("epoch", 0)))})
        except MtardError as err:
            tune.report(failure_report(int(ctx.metrics.get("epoch", 0)), str(err), diverged=False))

    return confirm_trial


# ---------------------------------------------------------------- the driver


def run_confirm(
    exp_dir: str | Path,
    *,
    members: list[str] | None = None,
    seeds: int | None = None,
    epochs: int | None = None,
    baselines: list[str] | None = None,
    attacks: list[str] | None = None,
    max_samples: int | None = None,
    batch_size: int | None = None,
    storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
) -> ConfirmData:
    """Confirm the front of the search in `exp_dir` (see the module doc); returns the aggregates."""
    from mtard.distributed import check_cluster_address
    from mtard.evaluate import DEFAULT_ATTACKS, check_attacks

    exp_dir = Path(exp_dir).resolve()
    space, pareto, records = load_search(exp_dir)
    files = ExperimentFiles(absolute(storage, str(exp_dir)) if storage else str(exp_dir),
                            f"{exp_dir.name}-{CONFIRM_NAME}" if storage else CONFIRM_NAME)
    plan_path = files.local / PLAN
    given = {"members": members, "seeds": seeds, "epochs": epochs, "baselines": baselines, "attacks": attacks,
             "max-samples": max_samples, "batch-size": batch_size}
    if resume:
        if files.remote is not None:
            download_missing(files.remote, files.local, (PLAN, RUNS, "checkpoints.json"))
        if not plan_path.is_file():
            raise MtardError(f"--resume: no confirmation to continue in {files.uri} (no {PLAN}); start one without --resume")
        changed = [k for k, v in given.items() if v is not None]
        if changed:
            raise MtardError(f"--{changed[0]} cannot change when resuming: the confirmation continues with the plan in {plan_path}")
        plan = Plan.from_dict(json.loads(plan_path.read_text()))
    else:
        if seeds is not None and seeds < 1:
            raise MtardError(f"--seeds must be >= 1 (the number of seeds per member), got {seeds}")
        if epochs is not None and epochs < 1:
            raise MtardError(f"--epochs must be >= 1 (leave it out for the base config's full schedule), got {epochs}")
        if max_samples is not None and max_samples < 0:
            raise MtardError(f"--max-samples must be >= 0 (0 = the whole test split), got {max_samples}")
        objectives = [Objective.from_dict(o) for o in pareto["objectives"]]
        needed = list(objective_attacks(objectives).values())
        names = check_attacks(list(attacks) if attacks is not None else list(DEFAULT_ATTACKS))
        names += [a for a in needed if a not in names]  # the objectives' own attacks are always measured
        plan = Plan(plan_members(space, pareto, records, members, list(baselines or [])), list(range(seeds or 3)),
                    int(epochs or space.base_config.optim.epochs), names, int(max_samples or 0), int(batch_size or 256))
        if plan_path.is_file() or (files.local / RUNS).is_file():
            raise MtardError(f"{files.uri} already holds a confirmation: continue it with --resume, or pass another --storage")
        check_writable(files.local, "confirmation output", "pass --storage a folder you can write to")
    configs = {run_id(m.member_id, s): run_config(space, m, s, plan.epochs) for m in plan.members for s in plan.seeds}
    check_cluster_address(address or os.environ.get("RAY_ADDRESS"))  # in seconds, before teachers are trained
    with hold_experiment(files):  # one driver per confirmation, as per search
        _stage_teachers(space, configs, files.storage)
        if not resume:
            atomic_write(plan_path, json.dumps(json_safe(plan.to_dict()), indent=1) + "\n")
            files.push(names=(PLAN,), dirs=())
        return _run(space, plan, configs, files, address=address, restoring=resume)


def _stage_teachers(space: SearchSpace, configs: dict[str, TrainConfig], storage: str) -> None:
    """Every teacher some run needs: trained or checked here, staged where every node fetches it."""
    from mtard.methods import teacher_fields
    from mtard.staging import stage

    names = list(dict.fromkeys(pair for cfg in configs.values() for pair in teacher_fields(cfg)))
    store, staged = stage(space.fixed_config(), names, storage)
    for cfg in configs.values():
        if staged:
            cfg.teachers.staged_store, cfg.teachers.staged = store, dict(staged)


def _run(space: SearchSpace, plan: Plan, configs: dict[str, TrainConfig], files: ExperimentFiles, *, address, restoring) -> ConfirmData:
    import ray
    from ray import tune

    from mtard.search import tune_adapter
    from mtard.search.resources import plan_concurrency, worker_resources
    from mtard.search.run import start_ray, tune_environment

    if space.resources["workers"] > 1:
        raise MtardError("confirm-front trains one-worker runs: this space asks for resources.workers > 1; "
                         "confirm with workers: 1 (one GPU per run), or train the members with `mtard train --workers`")
    started = start_ray(address, space)
    try:
        with tune_environment():
            capacity = tune_adapter.cluster_capacity()
            runs = plan.run_ids()
            sized = dataclasses.replace(space, num_samples=len(runs), resources={**space.resources, "ray_train": False})
            concurrency = plan_concurrency(sized, capacity, tune_adapter.node_shapes())
            function = make_confirm_trial(configs, files.read_checkpoints(), plan.attacks, plan.max_samples, plan.batch_size)
            trainable = tune.with_resources(function, worker_resources(sized))
            print(
                f"[confirm] {len(plan.members)} members x {len(plan.seeds)} seeds = {len(runs)} runs of {plan.epochs} epochs, "
                f"{concurrency} at a time; test split, attacks {','.join(plan.attacks)}"
                f"{f' (first {plan.max_samples} images)' if plan.max_samples else ''}\n[confirm] results: {files.uri}",
                flush=True,
            )
            progress = ConfirmProgress(files, sized, plan)
            todo = [r for r in runs if r not in {run_id(x.member_id, x.seed) for x in progress.results()}]
            if restoring and tune.Tuner.can_restore(files.uri):
                tune.Tuner.restore(files.uri, trainable, resume_unfinished=True, resume_errored=True).fit()
            elif todo:  # a new experiment, or one that died before Tune saved its state: the runs not recorded yet
                tune.Tuner(
                    trainable,
                    param_space={"run": tune.grid_search(todo)},
                    tune_config=tune.TuneConfig(
                        max_concurrent_trials=concurrency, reuse_actors=True,
                        trial_dirname_creator=_run_dirname, trial_name_creator=_run_dirname,
                    ),
                    run_config=tune.RunConfig(
                        name=files.name, storage_path=files.storage, callbacks=[progress],
                        failure_config=tune.FailureConfig(max_failures=space.fixed_config().scaling.max_failures),
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP), verbose=0,
                    ),
                ).fit()
            return progress.review()
    finally:
        if started:
            ray.shutdown()


def _run_dirname(trial) -> str:
    return f"run-{trial.config['run']}"


class ConfirmProgress(SearchProgress):
    """The search's callback, recording runs instead of trials: runs.jsonl, checkpoints.json, the results."""

    def __init__(self, files: ExperimentFiles, space: SearchSpace, plan: Plan):
        super().__init__(files, space, len(plan.run_ids()))
        self.plan = plan

    def __getstate__(self):
        return {**super().__getstate__(), "plan": self.plan}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.time()
        print(f"[confirm] start {trial.config.get('run')}", flush=True)

    def results(self) -> list[RunResult]:
        out: dict[tuple[str, int], RunResult] = {}
        for data in read_json_lines(self.files.local / RUNS):  # a line torn by a crash is skipped
            try:
                r = RunResult.from_dict(data)
            except (KeyError, TypeError):
                continue  # not a run's line
            out[(r.member_id, r.seed)] = r
        return list(out.values())

    def _finish(self, trials, trial, *, error: str | None) -> None:
        key = str(trial.config.get("run"))
        member, seed = key.rsplit("-s", 1)
        metrics = {k: v for k, v in (trial.last_result or {}).items() if k not in TUNE_KEYS}
        objectives = [TEST_PREFIX + a for a in self.plan.attacks]
        status, reason = classify(metrics, budget=self.plan.epochs, objectives=objectives, error=error)
        result = RunResult(
            member, int(seed), str(status), reason, int(metrics.get("epoch") or 0), self.plan.epochs,
            {a: metrics[TEST_PREFIX + a] for a in self.plan.attacks if finite(metrics.get(TEST_PREFIX + a))},
            int(metrics.get(SAMPLES_KEY) or 0),
            {k: v for k, v in metrics.items() if k.startswith(("val_", "selected_val_"))},
            float(metrics.get("time_in_epochs_s") or 0.0),
        )
        try:
            append_line(self.files.local / RUNS, json.dumps(json_safe(result.to_dict()), sort_keys=True))
            done = self.results()
            data = self.review(done)
        except Exception as err:  # never let bookkeeping kill the runs
            print(f"[confirm] warning: could not record run {key}: {err!r}", file=sys.stderr)
            return
        accs = " ".join(f"{a}={v:.4f}" for a, v in result.test.items())
        why = f" ({reason})" if reason else ""
        print(f"[confirm] {len(done)}/{self.total} done, {time.time() - self._t0:.0f}s | {key} {status} {accs}{why}"
              f" | confirmed front {', '.join(data.front) or '-'}", flush=True)

    def review(self, results: list[RunResult] | None = None, *, tensorboard: bool = True) -> ConfirmData:
        """The aggregates of `results` (default: runs.jsonl as it stands), written out."""
        from mtard.search.confirm_render import write_confirmed

        objectives = [Objective.from_dict(o.to_dict()) for o in self.space.objectives]
        data = compute_confirm(self.plan.members, self.results() if results is None else results, objectives, self.plan.attacks,
                               self.plan.seeds)
        write_confirmed(self.files.local, data, self.plan.epochs, tensorboard=tensorboard)
        self.files.push(names=CONFIRM_FILES)
        return data


__all__ = ["BASELINE_METHODS", "ConfirmProgress", "Plan", "load_search", "plan_members", "run_config", "run_confirm"]
