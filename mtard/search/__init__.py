"""The multi-objective search and the confirmation of its front. Imports flow one way, top to
bottom (`lint-imports` checks it: the contracts in pyproject.toml's [tool.importlinter]):

    confirm.py         confirm-front: retrain the front over seeds at a stated budget, test split
    run.py             run_search(): the driver; starts Ray, builds the Tuner, reviews at the end
    tune_adapter.py    trial functions, the Optuna adapter, the search's Tune callback
    plan.py            `mtard search --plan`: a few timed steps -> the search's cost before it starts
    compare.py         several searches in one review (no Ray)
    verify.py          evaluate-front: the front on the test split
    resources.py       what a trial reserves; how many run at once (pure)
    rung_judge.py      MO-ASHA at run time: the rung judge actor and the trials' client (Ray core only)
    confirm_render.py  confirmed.json/csv/md, the proxy -> confirmed figure, TensorBoard
    lock.py            one driver per experiment (a file lock, or a lease on URI storage)
    interrupts.py      SIGINT / SIGTERM end a search as an interruption
    render.py          CSV/JSON, terminal table, the Pareto figure, TensorBoard
    space.py           YAML -> a validated SearchSpace -> an Optuna sampler and define-by-run function
    budget.py          a trial's cost; whether another trial may start (budget.total, plateau) (pure)
    rung_rule.py       the MO-ASHA rule and its journal (pure)
    files.py           the experiment's layout and driver-side files (mirrored to a storage URI)
    confirm_review.py  a confirmation's aggregates over seeds, its front, Kendall's tau (pure)
    review.py          the front, hypervolumes, history, intervals (pure compute)
    records.py         Status, TrialRecord, Objective, classify(): what a search remembers (pure)

Ray Tune is imported only by tune_adapter.py and the two drivers that build a Tuner (run.py,
confirm.py), Optuna only by tune_adapter.py and space.py (the sampler). records, review, budget,
rung_rule, resources, files and confirm_review import neither torch, Ray, Optuna nor matplotlib.
Nothing below this package imports it: the training core is told when to stop through
`mtard.loop.StopRule`, which `rung_judge.RungClient` implements.
"""
