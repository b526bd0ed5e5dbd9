#!/usr/bin/env python
"""Time the trainer's real C-JEPA pretraining step, a fast path against the plain path in the same process.

    python scripts/benchmark.py --preset vit-b16 --batch-size 256 --dtype bf16 --compile --output b16.json

One step is `CJEPATrainer`'s (`cjepa_hf.bench.TrainerStep`, "step" in the JSON):
training_step (forward: target encoder without grad, context encoder, predictor, loss;
backward), the optimizer step with the callback's schedules and non-finite guard, AdamW,
the EMA update, the LR scheduler, on synthetic images with realistic multi-block masks
(sizes change from batch to batch). The plain baseline (eager attention, fp32, no compile,
foreach AdamW) runs in the same process on a copy of the same weights, its steps
interleaved with the fast path's, so both see the same machine load; `speedup` is the
ratio of their median step times. The split into parts comes from separate instrumented
steps (`TrainerStep.instrumented_step`), so the headline is not perturbed. The FLOP
formula is `cjepa_hf.bench.FLOP_FORMULA` (also in the JSON).
"""

from cjepa_hf.bench.runner import main

if __name__ == "__main__":
    main()
