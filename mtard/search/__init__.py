"""The multi-objective search. Imports flow one way, top to bottom (`lint-imports` checks it:
the contracts in pyproject.toml's [tool.importlinter]):

    run.py           run_search(): the driver; starts Ray, builds the Tuner, reviews at the end
    tune_adapter.py  trial functions, the Optuna adapter, the search's Tune callback
    compare.py       several searches in one review (no Ray)
    verify.py        evaluate-front: the front on the test split
    resources.py     what a trial reserves; how many run at once (pure)
    rung_judge.py    MO-ASHA at run time: the rung judge actor and the trials' client (Ray core only)
    render.py        CSV/JSON, terminal table, the Pareto figure, TensorBoard
    space.py         YAML -> a validated SearchSpace -> an Optuna sampler and define-by-run function
    review.py        the front, hypervolumes, history (pure compute)
    rung_rule.py     the MO-ASHA rule and its journal (pure)
    files.py         the experiment's layout and driver-side files (mirrored to a storage URI)
    records.py       Status, TrialRecord, Objective, classify(): what a search remembers (pure)

Ray Tune is imported only by tune_adapter.py and run.py (which builds the Tuner), Optuna only by
tune_adapter.py and space.py (the sampler). records, review, rung_rule, resources and files import
neither torch, Ray, Optuna nor matplotlib. Nothing below this package imports it: the training core
is told when to stop through `mtard.loop.StopRule`, which `rung_judge.RungClient` implements.
"""
