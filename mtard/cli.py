"""`mtard` command line: parsing and messages only; the work lives in the modules.

Every user error (MtardError) prints one line and exits with status 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mtard.errors import Interrupted, MtardError


def _train(args: argparse.Namespace) -> None:
    from mtard.config import load_config
    from mtard.runs import check_run_dir

    # Flags are config fields too: the same type and range checks, before any work starts.
    flags = {"name": args.name, "out_dir": args.out_dir, "scaling.workers": args.workers, "scaling.gpus_per_worker": args.gpus_per_worker}
    cfg = load_config(args.config, args.set, {k: v for k, v in flags.items() if v is not None})
    if args.workers is None and args.address is None:
        from mtard.storage import first_missing, remove_empty_folders
        from mtard.train import train_local

        created = first_missing(cfg.run_dir)
        check_run_dir(cfg.run_dir, cfg, resume=args.resume)
        try:
            metrics = train_local(cfg, resume=args.resume)
        except MtardError:
            if created is not None:  # a failed start (e.g. a missing teacher) leaves no empty folders behind
                remove_empty_folders(created)
            raise
    else:
        from mtard.distributed import train_distributed

        metrics = train_distributed(cfg, address=args.address, storage=args.storage, resume=args.resume)
    _print_final(cfg, metrics)


def _print_final(cfg, metrics: dict) -> None:
    e = cfg.eval
    print(
        f"{cfg.name}: epoch {metrics['epoch']}  val clean {metrics['val_clean_acc']:.4f}  "
        f"val PGD-{e.pgd_steps} (eps={e.eps:.4g}, step={e.pgd_step_size:.4g}) {metrics['val_pgd_acc']:.4f}\n"
        f"results in {cfg.run_dir}/ (config.yaml, metrics.jsonl, checkpoint.pt); "
        f"tensorboard --logdir {shlex.quote(str(cfg.run_dir))}"
    )


def _help_fields(_args: argparse.Namespace) -> None:
    from mtard.config import TrainConfig, field_paths, get_path

    defaults = TrainConfig()
    for path, tp in field_paths().items():
        name = getattr(tp, "__name__", str(tp).replace("typing.", ""))
        print(f"{path:28s} {name:40.40s} default {get_path(defaults, path)!r}")


def _comma_list(text: str | None, flag: str, *, known: str = "") -> list[str] | None:
    """A comma-separated flag: None when not given (the command's default); given but empty is an error."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise MtardError(f"{flag} is empty: name at least one{f' of {known}' if known else ''}, or leave it out for the default")
    return names


def _attack_list(text: str | None) -> list[str] | None:
    """--attacks: the attack names, or None for the command's default suite."""
    if text is not None and not text.replace(",", "").strip():
        from mtard.evaluate import ATTACKS  # only to name the choices in the error

        return _comma_list(text, "--attacks", known=",".join(ATTACKS))
    return _comma_list(text, "--attacks")


def _evaluate(args: argparse.Namespace) -> None:
    from mtard.evaluate import evaluate_checkpoint, render_attack_table

    report = evaluate_checkpoint(
        args.checkpoint, split=args.split, attacks=_attack_list(args.attacks), eps=args.eps, data_root=args.data_root,
        max_samples=args.max_samples, batch_size=args.batch_size, device=args.device, out=args.out,
        # Shown before the report is written: a failing write cannot take the results with it.
        on_results=lambda results: print(render_attack_table(results), flush=True),
        precision="bf16" if args.bf16 else "fp32",
    )
    print(f"written: {report['json']}")


def _teachers_list(args: argparse.Namespace) -> None:
    from mtard.teachers import checkpoint_path, load_catalog, sidecar, teacher_state
    from mtard.text import text_table

    if args.zoo:
        _zoo_list(args.dataset, args.threat)
        return
    rows, problems = [], []
    for name, entry in sorted(load_catalog(args.catalog).items()):
        side = sidecar(entry)
        acc = f"{side['val_clean_acc']:.3f}/{side['val_pgd_acc']:.3f}" if "val_pgd_acc" in side else "-"
        state, why = teacher_state(entry)
        if why:
            problems.append(f"{name}: {why}")
        rows.append((name, entry.dataset, entry.role, entry.arch, state, acc, str(checkpoint_path(entry))))
    header = ("name", "dataset", "role", "arch", "state", "val clean/PGD", "checkpoint")
    print("\n".join(text_table(header, rows) + problems))


def _zoo_list(dataset: str, threat: str) -> None:
    from mtard import robustbench_zoo
    from mtard.text import text_table

    names = robustbench_zoo.zoo_listing(dataset, threat)
    prefix = "rb:" if threat.lower() == "linf" else f"rb:{threat}:"
    print("\n".join(text_table(("teacher name", "dataset", "threat"), [(prefix + n, dataset, threat) for n in names])))
    print(f"{len(names)} models; published clean/AutoAttack accuracies: https://robustbench.github.io "
          f"(RobustBench's package does not ship them)")


def _teachers_train(args: argparse.Namespace) -> None:
    from mtard.teachers import checkpoint_path, get_entry, load_catalog
    from mtard.train import train_teacher

    catalog = load_catalog(args.catalog)
    for name in args.names:
        entry = get_entry(catalog, name)
        if checkpoint_path(entry).is_file() and not args.force:
            print(f"{name}: already trained at {checkpoint_path(entry)} (use --force to retrain)")
        else:
            record = train_teacher(entry)
            print(f"{name}: val clean {record['val_clean_acc']:.4f}, val PGD {record['val_pgd_acc']:.4f} -> {checkpoint_path(entry)}")
        if args.publish:
            from mtard.staging import publish_teacher
            from mtard.storage import absolute

            print(f"{name}: published ({publish_teacher(entry, absolute(args.publish, args.publish))})")


def _search(args: argparse.Namespace) -> None:
    from mtard.search.run import run_search

    if args.plan:
        _plan(args)
        return
    run_search(
        args.space, storage=args.storage, name=args.name, address=args.address, resume=args.resume,
        num_samples=args.num_samples, final_eval=args.final_eval,
    )


def _plan(args: argparse.Namespace) -> None:
    from mtard.errors import MtardError
    from mtard.search.plan import plan_search
    from mtard.search.space import load_space

    if args.resume:
        raise MtardError("--plan estimates a new search; it does not take --resume")
    if args.num_samples is not None and args.num_samples < 1:
        raise MtardError(f"--num-samples must be >= 1, got {args.num_samples}")
    space = load_space(args.space)
    if args.num_samples is not None:
        space.num_samples = args.num_samples
    print(plan_search(space, address=args.address))


def _evaluate_front(args: argparse.Namespace) -> None:
    from mtard.search.render import render_verified
    from mtard.search.verify import evaluate_front

    path = evaluate_front(
        Path(args.exp_dir), attacks=_attack_list(args.attacks), max_samples=args.max_samples, device=args.device,
        data_root=args.data_root, batch_size=args.batch_size,
    )
    print(render_verified(json.loads(path.read_text())))
    print(f"written: {path} and {path.with_suffix('.csv')}")


def _confirm_front(args: argparse.Namespace) -> None:
    from mtard.search.confirm import run_confirm
    from mtard.search.confirm_render import render_confirmed

    data = run_confirm(
        Path(args.exp_dir), members=_comma_list(args.members, "--members"), seeds=args.seeds, epochs=args.epochs,
        baselines=_comma_list(args.baselines, "--baselines"), attacks=_attack_list(args.attacks), max_samples=args.max_samples,
        batch_size=args.batch_size, storage=args.storage, address=args.address, resume=args.resume,
    )
    print(render_confirmed(data))
    unfinished = sum(r.status == "running" for s in data.summaries for r in s.runs)
    if unfinished:  # Tune stops on Ctrl-C and returns: say so, and exit as interrupted
        print(f"mtard: {unfinished} run(s) did not finish: continue with mtard confirm-front {args.exp_dir} --resume", file=sys.stderr)
        raise KeyboardInterrupt


def _compare(args: argparse.Namespace) -> None:
    from mtard.search.compare import compare
    from mtard.search.render import render_front_table

    data = compare(args.experiments, Path(args.out))
    print(render_front_table(data))
    print(f"results: {args.out}/ (pareto.csv, trials.csv, pareto.json); tensorboard --logdir {shlex.quote(str(args.out))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtard", description="MTARD training and accuracy-robustness search")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_command(sub)
    _add_evaluate_command(sub)
    _add_teachers_command(sub)
    _add_search_command(sub)
    _add_evaluate_front_command(sub)
    _add_confirm_front_command(sub)
    _add_compare_command(sub)
    return parser


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML file or bundled config name (e.g. digits_mtard)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. --set optim.lr=0.05")
    p.add_argument("--name", help="run name (results in OUT_DIR/NAME)")
    p.add_argument("--out-dir", help="parent directory of the run (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--workers", type=int, help="train with Ray Train on N workers (DDP)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray Train worker (fractions allowed)")
    p.add_argument("--address", help="Ray cluster address (auto, ray://host:10001); implies Ray Train")
    p.add_argument("--storage", help="Ray Train storage path (local dir or s3://, gs://)")
    p.add_argument("--help-fields", action="store_true", help="list every config field with its type and default")
    p.set_defaults(func=_train)


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="clean / FGSM / PGD / CW / AutoAttack table of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--attacks", help="comma-separated: clean,fgsm,pgd20_trades,pgd20_sat,cw,autoattack (default: all)")
    p.add_argument("--eps", type=float, help="L∞ radius (default: the one the run validated with)")
    p.add_argument("--data-root", help="where the data set lives (default: the run's data.root)")
    p.add_argument("--max-samples", type=int, default=0, help="evaluate the first N samples (0 = all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="JSON report path")
    p.add_argument("--bf16", action="store_true", help="attack under bf16 autocast (default fp32, as the official evaluations: a low-precision gradient can weaken the attack)")
    p.set_defaults(func=_evaluate)


def _add_teachers_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teachers", help="the teacher catalog")
    tsub = p.add_subparsers(dest="teachers_command", required=True)
    t = tsub.add_parser("list", help="catalog entries, their state and validation accuracy")
    t.add_argument("--catalog", default="", help="catalog YAML (default: the one shipped with mtard)")
    t.add_argument("--zoo", action="store_true", help="list the RobustBench model zoo instead (rb:<ModelID> names)")
    t.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"], help="with --zoo (default cifar10)")
    t.add_argument("--threat", default="Linf", help="with --zoo: Linf (default), L2 or corruptions")
    t.set_defaults(func=_teachers_list)
    t = tsub.add_parser("train", help="train teachers by their catalog recipes")
    t.add_argument("names", nargs="+")
    t.add_argument("--catalog", default="")
    t.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    t.add_argument("--publish", metavar="STORAGE", help="also put the teacher into STORAGE/teachers (s3://..., gs://... or a shared path), "
                   "where `mtard search --storage STORAGE` finds it from any machine (on a cluster: launch/train_teacher.sh)")
    t.set_defaults(func=_teachers_train)


def _add_search_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="multi-objective Ray Tune + Optuna search (clean vs robust accuracy)")
    p.add_argument("space", nargs="?", help="a search space YAML file, or the name of a shipped one (digits_tiny, the default; digits_methods, cifar10_resnet18, ...)")
    p.add_argument("--storage", help="experiment parent directory or s3:// URI (default: ./runs)")
    p.add_argument("--name", help="experiment name (default: the space file's name)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted search, e.g. runs/digits_tiny")
    p.add_argument("--final-eval", action="store_true", help="afterwards, evaluate the front on the test split")
    p.add_argument("--num-samples", type=int, help="override the space's num_samples")
    p.add_argument("--plan", action="store_true", help="train nothing: time a few steps of the base config where a trial "
                   "would run and print the search's cost in device-hours (upper bound and expected under MO-ASHA)")
    p.set_defaults(func=_search)


def _add_evaluate_front_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-front", help="evaluate a search's Pareto front on the test split (full attack suite)")
    p.add_argument("exp_dir", metavar="EXP_DIR", help="the search's experiment directory, e.g. runs/digits_tiny (holds pareto.json)")
    p.add_argument("--attacks", help="comma-separated (default: clean,pgd20_sat,pgd20_trades,cw,autoattack)")
    p.add_argument("--max-samples", type=int, default=0, help="evaluate the first N test samples (0 = all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="where the data set lives (default: each run's data.root)")
    p.set_defaults(func=_evaluate_front)


def _add_confirm_front_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("confirm-front", help="retrain the front (+ the official defaults, + baselines) over seeds at a full budget; test-split table with mean ± sd")
    p.add_argument("exp_dir", metavar="EXP_DIR", help="the search's experiment directory, e.g. runs/digits_tiny")
    p.add_argument("--members", help="comma-separated trial ids (default: the search's Pareto front)")
    p.add_argument("--seeds", type=int, help="seeds per member (default 3): model initialisation and data order; the train/val split stays the search's")
    p.add_argument("--epochs", type=int, help="training epochs (default: the base config's full schedule); milestones scale as in a search")
    p.add_argument("--baselines", help="comma-separated methods trained the same way from the base config: sat,trades,ard,rslad")
    p.add_argument("--attacks", help="comma-separated (default: clean,fgsm,pgd20_trades,pgd20_sat,cw,autoattack)")
    p.add_argument("--max-samples", type=int, help="evaluate the first N test images (default 0 = all)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default 256)")
    p.add_argument("--storage", help="where the confirmation goes (default: EXP_DIR/confirm; else STORAGE/<name>-confirm)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted confirmation (nothing finished is retrained)")
    p.set_defaults(func=_confirm_front)


def _add_compare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="one review of several searches: a front and a hypervolume per search (e.g. MTARD vs SAT)")
    p.add_argument("experiments", nargs="+", metavar="[LABEL=]EXP_DIR", help="experiment directories written by `mtard search`")
    p.add_argument("--out", default="runs/compare", help="where the combined review goes (default: runs/compare)")
    p.set_defaults(func=_compare)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.help_fields:
            args.func = _help_fields
        elif not args.config:
            parser.error("train: a CONFIG is required (a YAML file or a bundled name such as digits_mtard)")
    try:
        args.func(args)
    except MtardError as err:
        if args.debug:
            raise
        print(f"mtard: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"mtard: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("mtard: interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
