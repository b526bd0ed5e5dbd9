#!/usr/bin/env python
"""Throughput of the input pipeline: mask sampling and image decoding + augmentation.

    python scripts/benchmark_data.py --output outputs/benchmark_data.json
    python scripts/benchmark_data.py --image-dir /path/to/jpegs --output bench.json

What it measures and writes: `cjepa_hf.bench.pipeline` (its docstring, or --help).
"""

from cjepa_hf.bench.pipeline import main

if __name__ == "__main__":
    main()
