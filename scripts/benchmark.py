#!/usr/bin/env python
"""Time the trainer's real C-JEPA pretraining step, a fast path against the plain path in the same process.

    python scripts/benchmark.py --preset vit-b16 --batch-size 256 --dtype bf16 --compile --output b16.json

What it measures and writes: `cjepa_hf.bench.runner` (its docstring, or --help).
"""

from cjepa_hf.bench.runner import main

if __name__ == "__main__":
    main()
