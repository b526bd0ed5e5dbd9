"""What the scripts share on the command line: one-line errors with exit code 2 for a
user's mistakes (`user_errors`, the traceback with ``--debug``), an argument parser whose
own errors are such mistakes (`OneLineParser`), a short ``--help`` over a few chosen flags
(`short_help`), and every `CJEPAConfig` field with its default and meaning (`config_help`).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn

from transformers import HfArgumentParser

EXIT_USAGE = 2
DEBUG_FLAG = "--debug"


class UsageError(ValueError):
    """A mistake on the command line (an unknown flag, a bad value): one line, exit code 2."""


class _OneLineErrors:
    """Parser errors raise `UsageError` (one line, with the closest flag for a typo) instead
    of printing the whole usage block and exiting."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._refuse_unknown(args)
        return super().parse_args(args, namespace)

    def parse_args_into_dataclasses(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        self._refuse_unknown(args)
        return super().parse_args_into_dataclasses(args, *rest, **kwargs)

    def _refuse_unknown(self, args: Any) -> None:
        # An unknown flag first: "--repo_idd" should be answered with "did you mean --repo_id",
        # not with argparse's "the following arguments are required: --repo_id" (nor with a
        # dataclass's own check of the values that did parse).
        required = [a for a in self._actions if a.required]
        for action in required:
            action.required = False
        try:
            _, extras = self.parse_known_args(args, argparse.Namespace())
        finally:
            for action in required:
                action.required = True
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            flags = [a for a in unknown.group(1).split() if a.startswith("--")]
            known = [o for action in self._actions for o in action.option_strings]
            hints = []
            for flag in flags:
                close = difflib.get_close_matches(flag.split("=")[0], known, n=1, cutoff=0.6)
                if close:
                    hints.append(f"{flag}: did you mean {close[0]}?")
            message = f"unknown flag(s) {unknown.group(1)}" + ("; " + "; ".join(hints) if hints else "") + " (see --help)"
        raise UsageError(message)


class OneLineParser(_OneLineErrors, HfArgumentParser):
    """`HfArgumentParser` with one-line errors (`UsageError`). Abbreviated flags are refused:
    a typo such as --max_step must not pass for --max_steps (or for another flag it prefixes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class OneLineArgumentParser(_OneLineErrors, argparse.ArgumentParser):
    """`argparse.ArgumentParser` with one-line errors (`UsageError`), no abbreviated flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """(argv without ``--debug``, whether it was there)."""
    return [a for a in argv if a != DEBUG_FLAG], DEBUG_FLAG in argv


@contextlib.contextmanager
def user_errors(debug: bool, prog: str) -> Iterator[None]:
    """Inside: a `ValueError` / `FileNotFoundError` / `UsageError` (a bad flag, value, path) or a
    `ConnectionError` (a Hub id that cannot be reached: often a mistyped local path) or another
    `OSError` (transformers' answer to a model folder that does not exist) ends the
    process with one line on stderr (``prog: error: ...``) and exit code 2; with `debug` it
    propagates with its traceback."""
    try:
        yield
    except (ValueError, OSError) as error:  # FileNotFoundError and ConnectionError are OSErrors
        if debug:
            raise
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {text} (--debug for the traceback)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def process_start_time() -> float | None:
    """When this process started (seconds since the epoch, Linux's /proc), so that "done in"
    counts the imports too; None where /proc does not say."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _default_text(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return str(getattr(value, "value", value))


def short_help(
    parser: argparse.ArgumentParser,
    groups: Mapping[str, Iterable[str]],
    *,
    header: str,
    footer: str,
    defaults: Mapping[str, Any] | None = None,
) -> str:
    """A help text listing only the flags named in `groups` (title -> argument dests), one
    line each: the flag's spellings, its help and its default (`defaults` first, e.g. a
    recipe's values, then the parser's)."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # a boolean's --no_x shares its dest: keep the first, --x
        if action.option_strings:
            actions.setdefault(action.dest, action)
    defaults = defaults or {}
    lines = [header.rstrip(), ""]
    for title, dests in groups.items():
        lines.append(f"{title}:")
        for dest in dests:
            action = actions[dest]
            flags = ", ".join(o for o in action.option_strings if "-" not in o[2:] or "_" not in dest)
            help_text = " ".join((action.help or "").split()).replace("%%", "%")  # argparse escapes
            default = defaults.get(dest, action.default)
            text = _default_text(default)
            text = text if len(text) <= 60 else text[:57] + "..."
            shown = "" if default in (None, argparse.SUPPRESS, "") else f" [default: {text}]"
            lines.append(f"  {flags}: {help_text}{shown}" if help_text else f"  {flags}{shown}")
        lines.append("")
    lines.append(footer.rstrip())
    return "\n".join(lines) + "\n"


# What each CJEPAConfig field means, for `config_help` (the class docstring groups them and
# gives some defaults, not a line per field). tests/test_cli.py checks that every field of the
# signature has an entry, so a new field cannot be left out of --help_config.
CONFIG_FIELD_HELP = {
    "Encoder (a ViT without CLS token, fixed 2-D sin-cos position embeddings)": {
        "image_size": "input height and width in pixels (images are resized or padded to it)",
        "patch_size": "patch side in pixels; image_size must be a multiple of it",
        "num_channels": "input channels (3: RGB; grey images are converted)",
        "hidden_size": "encoder width D (the feature size users extract)",
        "num_hidden_layers": "encoder depth (transformer blocks)",
        "num_attention_heads": "attention heads per block (must divide hidden_size)",
        "intermediate_size": "MLP hidden size of each block (None: 4 * hidden_size)",
        "hidden_act": "MLP activation",
        "layer_norm_eps": "LayerNorm epsilon (1e-6 as I-JEPA)",
        "qkv_bias": "bias in the query/key/value projections",
        "drop_path_rate": "stochastic depth rate of the encoder blocks",
        "attention_dropout": "dropout on the attention weights",
        "initializer_range": "std of the truncated-normal weight initialisation",
    },
    "Predictor (a narrow ViT; pretraining only, not released)": {
        "predictor_hidden_size": "predictor width",
        "predictor_num_hidden_layers": "predictor depth",
        "predictor_num_attention_heads": "predictor heads (None: num_attention_heads)",
        "predictor_intermediate_size": "predictor MLP size (None: 4 * predictor_hidden_size)",
    },
    "Multi-block masking (I-JEPA)": {
        "num_target_blocks": "target blocks per image (M)",
        "target_scale": "(min, max) area of each target block, as a fraction of the image",
        "target_aspect_ratio": "(min, max) aspect ratio of the target blocks",
        "context_scale": "(min, max) area of the context block before the targets are removed",
        "context_aspect_ratio": "(min, max) aspect ratio of the context block",
        "min_keep": "fewest patches a block may keep (smaller ones are resampled)",
        "allow_target_overlap": "whether target blocks may overlap one another",
    },
    "Loss: L = L_jepa + vicreg_weight * (sim * inv + std * var + cov * cov) [+ the encoder regulariser]": {
        "jepa_loss": "distance of predictions to targets: 'l2' or 'smooth_l1'",
        "smooth_l1_beta": "beta of the smooth-L1 distance (with jepa_loss='smooth_l1')",
        "vicreg_weight": "beta, weight of C-JEPA's VICReg term (0: I-JEPA alone)",
        "vicreg_sim_coeff": "VICReg invariance coefficient",
        "vicreg_std_coeff": "VICReg variance coefficient (also the encoder regulariser's)",
        "vicreg_cov_coeff": "VICReg covariance coefficient (also the encoder regulariser's)",
        "vicreg_eps": "epsilon under the square root of VICReg's variance term",
        "vicreg_source": "'predictor' (the paper's Algorithm 1: per-block predictor means) or 'context' (context mean vs target block means)",
        "projector_dims": "hidden and output sizes of the VICReg projector MLP (the paper does not give them)",
        "encoder_vicreg_weight": "weight of the encoder regulariser (variance + covariance of the context encoder's output; in neither paper; 0: off)",
        "encoder_vicreg_features": "what the encoder regulariser sees: 'pooled' (mean over tokens), 'tokens' (every token) or 'both'",
    },
}


def config_fields() -> dict[str, Any]:
    """Every `CJEPAConfig.__init__` field -> its default."""
    from .configuration_cjepa import CJEPAConfig

    return {
        name: p.default
        for name, p in inspect.signature(CJEPAConfig.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def config_help() -> str:
    """Every `CJEPAConfig` field, grouped, with its default and its meaning."""
    defaults = config_fields()
    lines = [
        "CJEPAConfig fields: set them with --config_overrides 'name=value,name2=value2' (or a JSON object), or start",
        "from a size with --preset. Defaults are the class's; a recipe's config_overrides change some of them.",
        "",
    ]
    for header, fields in CONFIG_FIELD_HELP.items():
        lines.append(header)
        lines.extend(f"  {name} = {_default_text(defaults[name])}: {meaning}" for name, meaning in fields.items() if name in defaults)
        lines.append("")
    described = {name for fields in CONFIG_FIELD_HELP.values() for name in fields}
    rest = [name for name in defaults if name not in described]
    if rest:
        lines.append("Other")
        lines.extend(f"  {name} = {_default_text(defaults[name])}" for name in rest)
    return "\n".join(lines) + "\n"


__all__ = [
    "EXIT_USAGE",
    "OneLineParser",
    "process_start_time",
    "UsageError",
    "CONFIG_FIELD_HELP",
    "config_fields",
    "config_help",
    "short_help",
    "split_debug",
    "user_errors",
]
