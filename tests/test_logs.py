"""What the commands print: --help per command, each message once, no adverts or known deprecations, the run's
log in the run directory, and errors named by the command."""
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tstitch.cli import CONF, command, preflight
from tstitch.cli.help import options

BIN = Path(sys.executable).parent
COMMANDS = {"tstitch": "tstitch", "generate": "tstitch-generate", "search": "tstitch-search",
            "evaluate": "tstitch-evaluate", "reference": "tstitch-reference",
            "train": "tstitch-train", "report": "tstitch-report",
            "features": "tstitch-train-features", "demo": "tstitch-demo"}  # Hydra config -> console command
OPTIONAL = {"tstitch": ["experiment", "debug", "hydra/launcher"], "generate": ["experiment", "hydra/launcher"]}


def test_command_names():
    assert [command(n) for n in ("tstitch.cli.main", "tstitch", "tstitch.cli.generate", "search",
                                 "tstitch.cli.report", "tstitch.cli.features")] == [
        "tstitch", "tstitch", "tstitch-generate", "tstitch-search", "tstitch-report", "tstitch-train-features"]


def defaults_groups(config_name):
    """The groups of a command config's defaults list, in order (not Hydra's own, not _self_, not the OPTIONAL ones
    the page lists after them)."""
    entries = OmegaConf.load(Path(CONF) / f"{config_name}.yaml").get("defaults", [])
    optional = OPTIONAL.get(config_name, [])
    # a group's keys placed at the top (evaluate's /metric@_here_) is listed by its name (metric=adm chooses it)
    return [next(iter(e)).removesuffix("@_here_").lstrip("/") for e in entries if not isinstance(e, str)
            and not next(iter(e)).startswith("override ") and next(iter(e)) not in optional]


@pytest.mark.parametrize("config_name", COMMANDS)
def test_help_says_what_the_command_does_with_its_groups_and_examples(config_name, in_process, tmp_path,
                                                                     monkeypatch):
    exe = COMMANDS[config_name]
    r = in_process(exe, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    text = r.stdout
    assert text.startswith(f"{exe}: ") and "powered by Hydra" not in text and "== Config ==" not in text
    assert not (tmp_path / "outputs").exists()  # asking for help writes nothing
    listed = {}
    for line in text.split("Config groups")[1].split("Examples:")[0].splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("   "):
            group, rest = line.split(None, 1)
            listed[group] = rest
        elif line.strip():
            listed[group] += " " + line.strip()
    assert list(listed) == defaults_groups(config_name) + OPTIONAL.get(config_name, [])
    for group, text_options in listed.items():
        shown = [o.strip().rstrip("*") for o in text_options.replace(" (none chosen)", "").split(",")]
        assert set(options(CONF, group)) <= set(shown), group
    examples = [line.split("  #")[0].strip() for line in text.split("Examples:")[1].splitlines()[1:4]]
    assert len(examples) == 3 and all(e.startswith(f"{exe} ") for e in examples), examples
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # examples for GPU machines, checked here too
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    for example in examples:  # every example composes (each value of a sweep too)
        preflight(config_name, shlex.split(example)[1:])


def test_help_marks_the_current_choices(in_process, tmp_path):
    r = in_process("tstitch-generate", "+experiment=dit_s_xl", "--help", cwd=tmp_path)
    groups = r.stdout.split("Config groups")[1]
    assert "dit_s_xl*" in groups and "toy*" not in groups and "gpu*" in groups and "cpu*" not in groups


def test_generate_prints_each_message_once_and_logs_the_run(tmp_path):
    """tstitch-generate with W&B offline and an `srun` on PATH (Lightning's SLURM hint): every terminal line once,
    no adverts or known deprecations, and the run's log (Lightning's lines and the summary) in generate.log."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake / "srun").chmod(0o755)
    r = subprocess.run([str(BIN / "tstitch-generate"), "num_samples=8", "batch_size=8", "solver.steps=2",
                        "logger.mode=offline", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
                                                       "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "wandb").exists()
    terminal = (r.stdout + r.stderr).replace("\r", "\n").splitlines()
    lines = [line for line in terminal if line.strip() and not line.startswith("generating:")]  # progress bar
    assert [line for line, n in Counter(lines).items() if n > 1] == [], lines
    for noise in ("srun", "LeafSpec", "Tip:", "litlogger", "anonymous", "Traceback"):
        assert not [line for line in lines if noise in line], noise
    assert sum("GPU available" in line for line in lines) == 1
    summary = [line for line in r.stdout.splitlines() if line.startswith("tstitch-generate: 8 samples")]
    log = (tmp_path / "run" / "generate.log").read_text()
    assert len(summary) == 1 and summary[0] in log and "GPU available: False" in log
