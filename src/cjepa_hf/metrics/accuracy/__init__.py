# The metric is accuracy.py, loaded by `evaluate.load(<this folder>)`; this file only makes
# setuptools' `packages = find:` ship the folder with the package.
