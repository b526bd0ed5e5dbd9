"""Local `evaluate` metric modules, loadable offline with `evaluate.load(<folder>)`.

`cjepa_hf.evaluation.ACCURACY_METRIC_PATH` is the folder of the accuracy module."""
