"""The multi-objective search. Imports flow one way, top to bottom:

    space.py      YAML -> a validated SearchSpace -> an Optuna define-by-run function
    records.py    Status, TrialRecord, Objective, classify(): what a search remembers (no Ray)
    files.py      the experiment's layout and driver-side files (mirrored to a storage URI)
    resources.py  what a trial reserves; how many run at once (pure)
    review.py     the front, hypervolumes, history (pure compute)
    render.py     CSV/JSON, terminal table, the Pareto figure, TensorBoard
    verify.py     evaluate-front: the front on the test split
    compare.py    several searches in one review (no Ray)
    tune_adapter.py  the only module importing ray.tune / optuna: trial functions, Optuna adapter, callback
    run.py        run_search(): ties it together
"""
