"""The command lines a person reads and types (issue 21): scripts/pretrain.py's --help,
--help_all and --help_config, one-line errors with exit code 2, and README's commands and
flags checked against the scripts' own parsers."""

import os
import re
import shlex

import pytest
from helpers.cli import pretrain_module

from cjepa_hf.cli import CONFIG_FIELD_HELP, config_fields

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_main(argv, capsys):
    """(exit code, stdout, stderr) of scripts/pretrain.py's main, in this process."""
    with pytest.raises(SystemExit) as raised:
        pretrain_module().main(argv)
    out = capsys.readouterr()
    return raised.value.code, out.out, out.err


# ----------------------------------------------------------------------------- help


def test_help_is_short_and_lists_every_recipe_and_only_accepted_optimizers(capsys):
    code, out, _ = _run_main(["--help"], capsys)
    assert code == 0 and len(out.splitlines()) < 150, len(out.splitlines())
    recipes = sorted(f for f in os.listdir(os.path.join(ROOT, "recipes")) if f.endswith(".json"))
    assert all(r in out for r in recipes), [r for r in recipes if r not in out]  # vit-h14 and vit-g16 included
    optim = next(line for line in out.splitlines() if line.strip().startswith("--optim:"))
    assert "adamw_torch or adamw_torch_fused" in optim and "sgd" not in out and "adafactor" not in out
    warmup = next(line for line in out.splitlines() if line.strip().startswith("--warmup_steps:"))
    assert "from --warmup_start_lr" in warmup and "[default: 0.1]" in warmup  # the quick start's
    assert "--split: Split of --dataset_name to train on." in out and "--help_all" in out and "--help_config" in out
    assert "--dataset, --dataset_name:" in out


def test_help_all_has_every_trainer_field_and_only_accepted_optimizers(capsys):
    code, out, _ = _run_main(["--help_all"], capsys)
    assert code == 0 and "--gradient_checkpointing" in out and "--lr_scheduler_kwargs" in out
    assert "--optim {adamw_torch,adamw_torch_fused}" in out and "adafactor" not in out


def test_help_config_lists_every_config_field_with_default_and_meaning(capsys):
    code, out, _ = _run_main(["--help_config"], capsys)
    fields = config_fields()
    described = {name for group in CONFIG_FIELD_HELP.values() for name in group}
    assert described == set(fields)  # a new CJEPAConfig field needs a line in CONFIG_FIELD_HELP
    for name, default in fields.items():
        line = next(line for line in out.splitlines() if line.startswith(f"  {name} = "))
        shown = repr(default) if isinstance(default, str) else str(default)
        assert line.startswith(f"  {name} = {shown}: ") and len(line) > len(f"  {name} = {shown}: ") + 5, line


# ----------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_step", "2"], "unknown flag(s) --max_step 2; --max_step: did you mean --max_steps?"),
        (["--dataset_name", "/no/such/folder"], "--dataset_name '/no/such/folder' does not exist"),
        (["--config_overrides", "hiden_size=8"], "'hiden_size' is not a CJEPAConfig field; did you mean 'hidden_size'"),
        (["--optim", "sgd"], "optim must be adamw_torch or adamw_torch_fused"),
        (["--eval_strategy", "steps", "--eval_dataset", ""], "--eval_strategy steps / --eval_on_start True need --eval_dataset"),
    ],
)
def test_a_mistake_ends_in_one_line_and_exit_code_2(argv, message, capsys, tmp_path):
    code, out, err = _run_main([*argv, "--output_dir", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("pretrain.py: error: ") and message in err, err
    assert "Traceback" not in err and "IntervalStrategy" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="hiden_size"):
        pretrain_module().main(["--config_overrides", "hiden_size=8", "--output_dir", str(tmp_path), "--debug"])


def test_old_spellings_still_work():
    parse = pretrain_module().parse_args
    for flags in (["--dataset", "x/y"], ["--dataset_name", "x/y"]):
        _, data, _, _ = parse([*flags, "--image_column_name", "img", "--label_column", "cls"])
        assert (data.dataset, data.image_column, data.label_column) == ("x/y", "img", "cls")
    parser = _script("push_to_hub").build_parser()
    for flags in (["--repo-id", "a/b", "--no-push"], ["--repo_id", "a/b", "--no_push"]):
        args = parser.parse_args(["--checkpoint", "c", "--output", "o", *flags])
        assert (args.repo_id, args.no_push) == ("a/b", True)


# ----------------------------------------------------------------------------- README


def _code_lines():
    """README's code: the lines of its code blocks (continuations joined) and its inline spans."""
    blocks = re.findall(r"```(?:bash|sh|python)?\n(.*?)```", README, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S))


def _readme_commands(script):
    """Every command in README (code blocks and inline code) that runs scripts/<script>.py, as
    the tokens after the script's path."""
    commands = []
    for line in _code_lines():
        line = line.split(" #")[0]
        marker = f"scripts/{script}.py"
        if marker in line and "--" in line.split(marker, 1)[1]:
            commands.append(shlex.split(line.split(marker, 1)[1]))
    return commands


def test_every_pretrain_command_in_the_readme_parses(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipe paths are relative to the checkout
    commands = _readme_commands("pretrain")
    assert len(commands) >= 10
    parse = pretrain_module().parse_args
    for tokens in commands:
        if "..." in tokens or tokens[:1] == ["--help"]:
            continue
        parse(tokens)  # raises on an unknown flag or a bad value


def test_every_push_to_hub_command_in_the_readme_parses():
    parser = _script("push_to_hub").build_parser()
    commands = _readme_commands("push_to_hub")
    assert commands
    for tokens in commands:
        parser.parse_args(tokens)


def test_every_flag_the_readme_names_exists():
    """Flags in README's commands of the scripts (after the script's path: not the launchers'
    own) and in its inline flag mentions belong to one of the scripts' parsers."""
    known = set()
    for action in pretrain_module().build_parser()._actions:
        known.update(action.option_strings)
    known.update({"--help_all", "--help_config", "--debug"})
    for name in ("push_to_hub", "convert_ijepa_checkpoint"):
        for action in _script(name).build_parser()._actions:
            known.update(action.option_strings)
    for name in ("sweep", "finetune", "linear_probe", "benchmark_online_eval"):  # parsers built inside main
        known.update(re.findall(r"\"(--[a-z_-]+)\"", open(os.path.join(ROOT, "scripts", f"{name}.py")).read()))
    known.update(f"--{f}" for f in ("model_name_or_path", "dataset_name", "train_dir", "validation_dir", "output_dir"))
    named = set()
    for line in _code_lines():
        line = line.split(" #")[0]
        if "scripts/" in line:  # a command: the launcher's flags come before the script
            line = line.split("scripts/", 1)[1]
        elif not line.startswith("--"):  # other tools' commands (ruff, pytest, pip)
            continue
        named.update(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", line))
    assert named and not sorted(named - known), sorted(named - known)
