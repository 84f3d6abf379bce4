"""The multi-objective search: space (YAML -> Optuna), run (Ray Tune driver), review (front, history, renderers)."""
