"""One dialect: ``experiment=NAME`` and ``debug=tiny`` choose a group like any other, and ``+experiment=NAME``,
``+debug=tiny`` (the spelling before the commands listed them as null) compose the same config; the ``--flag``
spelling of tstitch-report and tstitch-train-features is translated, with one line naming the new one."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tstitch.cli import CONF
from tstitch.cli.spelling import optional_groups, plain_groups, translate, value

EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


def command(name):
    return "tstitch" if name.startswith("toy") else "generate"


def composed(config, overrides):
    with initialize_config_dir(CONF, version_base=None):
        return compose(config, overrides, return_hydra_config=True)


def within(own, node, where=""):
    """Every key of ``own`` (a yaml's own keys) is in ``node`` with the same value."""
    if isinstance(own, dict):
        for key, v in own.items():
            within(v, node[key], f"{where}.{key}")
    else:
        assert node == own, (where, node, own)


def same(config, plain):
    """Both spellings of ``plain`` (as the commands take them) compose one config; returns it."""
    added = [f"+{o}" for o in plain]
    assert plain_groups(added, config) == plain
    a, b = composed(config, plain), composed(config, plain_groups(added, config))
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)
    return a


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_the_same_in_both_spellings(name):
    cfg = same(command(name), [f"experiment={name}"])
    assert cfg.hydra.runtime.choices.experiment == name
    own = OmegaConf.to_container(OmegaConf.load(Path(CONF) / "experiment" / f"{name}.yaml"))
    own.pop("defaults", None)
    within(own, OmegaConf.to_container(cfg, resolve=False))  # over the command's own keys


def test_debug_tiny_composes_the_same_in_both_spellings_and_wins_over_an_experiment():
    cfg = same("tstitch", ["debug=tiny"])
    assert (cfg.num_samples, cfg.solver.steps, list(cfg.sweep.first)) == (8, 3, [0.0, 0.5, 1.0])
    for order in (["experiment=toy_s_l", "debug=tiny"], ["debug=tiny", "experiment=toy_s_l"]):
        cfg = same("tstitch", order)
        assert (cfg.num_samples, cfg.batch_size, cfg.paper.label) == (8, 4, "paper FID-5K (DiT-S/XL)")


def test_the_groups_listed_as_null_are_the_ones_rewritten():
    assert {"experiment", "debug"} <= optional_groups("tstitch") and "experiment" in optional_groups("generate")
    assert plain_groups(["+experiment=a", "+debug=tiny", "+seed_extra=1", "++debug=tiny", "-m"], "tstitch") == [
        "experiment=a", "debug=tiny", "+seed_extra=1", "++debug=tiny", "-m"]


@pytest.mark.parametrize("command,args", [
    ("tstitch", ["experiment=toy_s_l", "debug=tiny"]), ("tstitch-generate", ["experiment=dit_s_xl"])])
def test_both_spellings_on_the_command_line_print_one_config(in_process, tmp_path, command, args):
    printed = []
    for spelling in (args, [f"+{a}" for a in args]):
        r = in_process(command, "--cfg", "job", *spelling, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        printed.append(OmegaConf.create(r.stdout))
    assert printed[0] == printed[1] and printed[0].num_samples == (8 if command == "tstitch" else 5000)
    assert not (tmp_path / "outputs").exists()


def test_an_experiment_runs_in_the_plain_spelling(tmp_path, in_process):
    """The toy table of test_experiments (written there with +), run as experiment=... debug=tiny."""
    r = in_process("tstitch", "experiment=toy_s_l", "debug=tiny", "metric=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0].endswith("| paper FID-5K (DiT-S/XL) |") and len(lines) == 2 + 3  # debug=tiny's 3 allocations
    assert OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")[0] == "experiment=toy_s_l"


@pytest.mark.parametrize("text", ["runs/a", "0", "1e3", "true", "null", "a b", "it's", "x,y=z", "[a]", "~/r",
                                  "tail\\", "c:\\dir\\'q", "${oc.env:HOME}", "uni-code_ü"])
def test_a_quoted_value_reads_back_as_the_same_string(text):
    cfg = composed("report", [f"runs={value(text)}", f"out={value(text)}"])
    assert cfg.runs == text and cfg.out == text and cfg.hydra.run.dir == text


REPORT = {"--out": "out"}


def test_old_report_arguments_become_keys_with_one_line(capsys):
    args = translate("tstitch-report", ["a", "b c", "--out", "o", "-m", "--cfg", "job", "x=1"], REPORT, {"out"},
                     "runs")
    assert args == ["runs=[a,'b c']", "out=o", "-m", "--cfg", "job", "x=1"]
    assert translate("tstitch-report", ["runs/0", "--out=r"], REPORT, {"out"}, "runs") == ["runs=runs/0", "out=r"]
    err = capsys.readouterr().err.splitlines()
    assert err == ["tstitch-report: the --flag spelling is deprecated; this runs as: tstitch-report "
                   "'runs=[a,'\"'\"'b c'\"'\"']' out=o -m --cfg job x=1",
                   "tstitch-report: the --flag spelling is deprecated; this runs as: tstitch-report runs=runs/0 out=r"]
    for new in (["runs=a", "out=b"], ["--help"], ["--cfg", "job", "runs=a"], ["-m", "runs=a,b"], ["--info", "all"]):
        assert translate("tstitch-report", new, REPORT, {"out"}, "runs") == new  # the new spelling is left alone
    assert capsys.readouterr().err == ""


def test_old_flags_with_numbers_stay_numbers_and_paths_stay_strings(capsys):
    flags = {"--epochs": "epochs", "--lr": "lr", "--out": "out"}
    assert translate("tstitch-train-features", ["--epochs", "2", "--lr=1e-3", "--out", "7"], flags, {"out"}) == [
        "epochs=2", "lr=1e-3", "out='7'"]
    assert translate("tstitch-train-features", ["--epochs"], flags, {"out"}) == ["epochs=???"]  # named missing
    assert len(capsys.readouterr().err.splitlines()) == 2
