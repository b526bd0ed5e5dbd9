#!/usr/bin/env python
"""Export a C-JEPA training checkpoint as a Hub release and upload it.

    python scripts/push_to_hub.py --checkpoint outputs/quickstart --output releases/quickstart --repo_id me/quickstart
    python scripts/push_to_hub.py --checkpoint outputs/run/checkpoint-1000 \
        --output releases/cjepa-vitb16 --repo_id me/cjepa-vitb16 \
        --results probe.json --dataset_name ILSVRC/imagenet-1k [--hardware "8 x A100"] [--private] [--no_push]

From a run of scripts/pretrain.py (its output folder or one of its checkpoint-N folders) the
card reads the run's own record, pretrain_summary.json: the data set it trained on, the
hardware, the wall time and its final judgement; flags given here win.

Writes the release folder (target encoder as CJEPAModel in safetensors, config.json with
auto_map, remote code, the preprocessor_config.json the run saved, README.md rendered from
the run's real config, training arguments and the measured results), then creates the
repo and uploads exactly those files. `--results` takes a JSON list of results or the JSON
that `scripts/linear_probe.py --output` writes. The token comes from huggingface_hub
(HF_TOKEN or `hf auth login`). Without network (HF_HUB_OFFLINE=1, no connection) the push
ends with a one-line error and exit code 3; the release folder is kept. A bad flag or input
ends with a one-line error and exit code 2. Flags follow transformers' spelling (underscores);
the former hyphenated spellings (--repo-id, --no-push, ...) still work.
A thin CLI over `cjepa_hf.hub`.
"""

from __future__ import annotations

import argparse
import sys

from cjepa_hf.cli import OneLineArgumentParser, UsageError
from cjepa_hf.hub import HubUnreachableError, export_release, load_results, load_variants, push_release

EXIT_BAD_INPUT = 2
EXIT_HUB_UNREACHABLE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a run's output folder or a checkpoint-N folder (a saved CJEPAForPreTraining)")
    parser.add_argument("--output", "--output_dir", required=True, help="new (or empty) folder for the release")
    parser.add_argument("--repo_id", "--repo-id", required=True, help="Hub repo id, e.g. me/cjepa-vitb16 (also the card's model name)")
    parser.add_argument(
        "--results",
        help="JSON list of measured results (see cjepa_hf.hub.to_eval_result), or the "
        "JSON of scripts/linear_probe.py --output; accuracies are fractions in [0, 1]",
    )
    parser.add_argument(
        "--training_args",
        "--training-args",
        help="JSON of the run's training arguments (default: training_args.json "
        "next to the checkpoint; training_args.bin is never unpickled)",
    )
    parser.add_argument(
        "--dataset_name",
        "--dataset",
        dest="dataset",
        action="append",
        help="Hub id of the pretraining dataset (repeatable; default: the run's, from its pretrain_summary.json)",
    )
    parser.add_argument("--base_model", "--base-model", help="Hub id of the model this run started from, if any")
    parser.add_argument("--variant", choices=sorted(load_variants()), help="model-card variant (default: from the geometry)")
    parser.add_argument("--license", help="license id (default: the variant's)")
    parser.add_argument(
        "--image_processor",
        "--image-processor",
        help="preprocessor_config.json (or its folder) the release carries "
        "(default: the one the run saved with the checkpoint or in its output folder)",
    )
    parser.add_argument(
        "--hardware", help="what the run trained on, e.g. '8 x NVIDIA A100 80GB' (default: the run's pretrain_summary.json)"
    )
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--commit_message", "--commit-message", default="Upload C-JEPA release (target encoder, remote code, model card)")
    parser.add_argument("--no_push", "--no-push", action="store_true", help="write the release folder only")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"push_to_hub.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        results = load_results(args.results) if args.results else None
        files = export_release(
            args.checkpoint,
            args.output,
            model_name=args.repo_id,
            results=results,
            training_args=args.training_args,
            base_model=args.base_model,
            datasets=args.dataset,
            variant=args.variant,
            license=args.license,
            image_processor=args.image_processor,
            compute={"hardware": args.hardware} if args.hardware else None,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"release written to {args.output}: {', '.join(files)}")
    if args.no_push:
        return 0
    try:
        pushed = push_release(args.output, args.repo_id, private=args.private, commit_message=args.commit_message)
    except HubUnreachableError as error:  # offline: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return EXIT_HUB_UNREACHABLE
    print(f"uploaded {len(pushed.files)} files to {pushed.repo_url}" + (f" ({pushed.commit_url})" if pushed.commit_url else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
