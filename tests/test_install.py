"""A wheel install works outside the checkout (configs are package data), and users add configs from a folder of
theirs (TSTITCH_CONFIG_PATH or hydra.searchpath): a zoo entry, a stitch that uses it, a prompt set."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tstitch.data import prompts
from tstitch.errors import ConfigError
from tstitch.models import zoo
from tstitch.searchpath import CONF, ENV, with_user_dirs

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*") if p.is_file())


def user_folder(root):
    """A config folder laid out like conf/: a zoo entry (the toy small member under another name), a stitch of
    it with the shipped toy/large, and a prompt set."""
    (root / "model" / "mine").mkdir(parents=True)
    entry = (ROOT / "conf" / "model" / "toy" / "small.yaml").read_text().replace("toy-dit-small", "my-small")
    (root / "model" / "mine" / "small.yaml").write_text(entry)
    (root / "stitch").mkdir()
    (root / "stitch" / "mine.yaml").write_text("defaults:\n  - /model@members.small: mine/small\n"
                                               "  - /model@members.large: toy/large\nfractions: [0.4, 0.6]\n"
                                               "rule: steps\ncodec: null\n")
    (root / "prompts").mkdir()
    (root / "prompts" / "mine.txt").write_text("a lighthouse\na red kite\n")
    return root


def test_package_list_is_every_package_of_the_source_tree():
    """pyproject.toml lists the packages (tstitch.conf is mapped onto conf/, so it cannot be found): a new
    subpackage missing from the list would be missing from the wheel."""
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setup["packages"]) == sorted(find_packages(str(ROOT), include=["tstitch*"]) + ["tstitch.conf"])
    assert setup["package-dir"] == {"tstitch.conf": "conf"}


@pytest.mark.slow
def test_wheel_runs_the_main_job_and_the_api_outside_the_checkout(tmp_path):
    """Build the wheel (from a copy of the sources, so the checkout gets no build/), install it without
    dependencies into a target, then run ``tstitch +debug=tiny`` and ``tstitch.load`` from another directory with
    only the target and the venv's site-packages on the path (``python -S``: no editable-install hook)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "conf", "tstitch"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                                          else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tstitch-*.whl")
    with zipfile.ZipFile(wheel) as z:
        packed = sorted(n.removeprefix("tstitch/conf/") for n in z.namelist() if n.startswith("tstitch/conf/"))
    assert packed == SHIPPED
    target = tmp_path / "target"
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]

    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "TSTITCH_CACHE": str(tmp_path / "cache")}
    env.pop(ENV, None)
    r = subprocess.run([sys.executable, "-S", str(target / "bin" / "tstitch"), "+debug=tiny", "metric=none",
                        "logger=none", f"hydra.run.dir={away / 'run'}"], cwd=away, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (away / "run" / "results.jsonl").read_text().splitlines()]
    assert [row["nfe"] for row in rows] == [[0, 3], [2, 1], [3, 0]]
    assert json.loads((away / "run" / "run.json").read_text())["members"] == ["toy-dit-small", "toy-dit-large"]

    code = ("import json, tstitch; from tstitch import searchpath; from tstitch.models import zoo; "
            "print(json.dumps([tstitch.__file__, searchpath.CONF, zoo.names(), tstitch.load('toy/small').name, "
            "tstitch.load('mine/small').name]))")
    env[ENV] = str(user_folder(tmp_path / "mine"))
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=away, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    module, conf, names, small, mine = json.loads(r.stdout.splitlines()[-1])
    assert Path(module) == target / "tstitch" / "__init__.py" and Path(conf) == target / "tstitch" / "conf"
    assert names == sorted(zoo.names() + ["mine/small"]) and (small, mine) == ("toy-dit-small", "my-small")


def test_user_folder_adds_zoo_entries_and_prompt_sets(tmp_path, monkeypatch):
    assert "mine/small" not in zoo.names()
    with pytest.raises(ConfigError, match=r"unknown zoo entry 'mine/small'; .* or add model/mine/small.yaml to a "
                                          r"config folder named in TSTITCH_CONFIG_PATH"):
        zoo.entry("mine/small")
    monkeypatch.setenv(ENV, str(user_folder(tmp_path)))
    assert "mine/small" in zoo.names() and "toy/large" in zoo.names()
    assert zoo.load("mine/small").name == "my-small"
    assert zoo.entry("toy/small")["name"] == "toy-dit-small"  # the shipped entries stay as they are
    assert prompts.load("mine.txt") == ["a lighthouse", "a red kite"]
    assert prompts.load("demo.txt")[0] == (ROOT / "conf" / "prompts" / "demo.txt").read_text().splitlines()[0]


@pytest.mark.parametrize("how", ["env", "searchpath"])
def test_command_stitches_a_user_zoo_entry(tmp_path, in_process, how):
    """``stitch=mine`` from the user's folder, named by TSTITCH_CONFIG_PATH or by hydra.searchpath."""
    folder = user_folder(tmp_path / "mine")
    env = {ENV: str(folder)} if how == "env" else {}
    args = [] if how == "env" else [f"hydra.searchpath=[file://{folder}]"]
    r = in_process("tstitch", "+debug=tiny", "stitch=mine", "metric=none", "sweep.first=[0.0,1.0]", *args,
                   f"hydra.run.dir={tmp_path / 'run'}", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["members"] == ["my-small", "toy-dit-large"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [row["nfe"] for row in rows] == [[0, 3], [3, 0]]


def test_user_configs_are_unknown_without_the_folder_and_a_bad_folder_is_one_line(tmp_path, in_process):
    r = in_process("tstitch", "+debug=tiny", "stitch=mine", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2 and "Could not find 'stitch/mine'" in r.stderr, r.stderr[-1500:]
    r = in_process("tstitch", "+debug=tiny", f"hydra.run.dir={tmp_path / 'run'}", env={ENV: str(tmp_path / "nope")},
                   cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"tstitch: error: {ENV} names {tmp_path / 'nope'}, which is not a directory; give config folders laid out "
        f"like conf/ (model/, stitch/, experiment/, ...), separated by ':'"]


def test_user_folders_extend_a_searchpath_given_on_the_command_line(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    env = {ENV: os.pathsep.join([str(a), str(b)])}
    assert with_user_dirs(["-m", "x=1"], env={}) == ["-m", "x=1"]
    assert with_user_dirs(["x=1"], env=env) == ["x=1", f"hydra.searchpath=['file://{a}','file://{b}']"]
    assert with_user_dirs(["hydra.searchpath=[pkg://other.conf,file://" + str(b) + "]", "x=1"], env=env) == [
        "x=1", f"hydra.searchpath=['pkg://other.conf','file://{b}','file://{a}']"]
    assert Path(CONF) == ROOT / "conf"  # a checkout reads conf/ itself (the wheel's copy: the test above)
