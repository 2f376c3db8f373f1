import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import lightning.pytorch  # noqa: F401 - its log handler binds to the session's stderr, not one test's captured one
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # two cores: one thread per process is fastest for these small nets


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One tstitch cache for the whole session, apart from the user's own: the toy test set's reference statistics
    (10 s) are made once, and are keyed by content, so tests that share them cannot see another's reference. A test
    about the cache itself gives its own directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TSTITCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _restore_dtype():
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@contextlib.contextmanager
def _global_state_kept():
    """Put back what a command run in this process changes for the rest of it: the logging set up by Hydra
    (its handlers write to this test's captured stdout and run directory), torch threads and TF32 flags,
    warning filters, the working directory and Hydra's global instance."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    loggers = [logging.root, *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    saved = {lg: (lg.level, lg.propagate, lg.disabled, list(lg.handlers)) for lg in loggers}
    disabled = logging.root.manager.disable
    threads, cwd = torch.get_num_threads(), os.getcwd()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        with warnings.catch_warnings():
            yield
    finally:
        for lg, (level, propagate, off, handlers) in saved.items():
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.setLevel(level)
            lg.propagate, lg.disabled, lg.handlers[:] = propagate, off, handlers
        logging.disable(disabled)
        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        os.chdir(cwd)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # the job's Hydra config (run name, experiment) ends with the job


def _run_script(monkeypatch, command, args, env, cwd):
    """Run an installed console script's function in this process with that ``sys.argv``, as the command would run:
    (argv, exit code, what the interpreter would print on exit)."""
    (script,) = entry_points(group="console_scripts", name=command)
    if cwd is not None:
        monkeypatch.chdir(cwd)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    argv = [str(Path(sys.executable).parent / command), *map(str, args)]
    monkeypatch.setattr(sys, "argv", list(argv))
    code, message = 0, ""
    with _global_state_kept():
        try:
            script.load()()
        except SystemExit as e:  # as the interpreter exits: None -> 0, an int as is, else printed and 1
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            message = "" if e.code is None or isinstance(e.code, int) else f"{e.code}\n"
        except Exception:  # an uncaught error: a traceback on stderr and exit code 1
            code, message = 1, traceback.format_exc()
    return argv, code, message


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``in_process(command, *args, env={...}, cwd=None)`` runs an installed console script's function
    (``tstitch`` -> ``tstitch.cli.main:entry``, ...) in this process with that ``sys.argv``, as the command would
    run, and returns a CompletedProcess with its exit code and captured stdout/stderr: the same checks as on a
    subprocess, without its start-up (importing torch, Lightning and Hydra, 4-8 s). Python warnings go to pytest's
    summary instead of stderr; each CLI keeps a subprocess test of its exit code and one-line error."""
    def run(command, *args, env=None, cwd=None):
        capsys.readouterr()
        argv, code, message = _run_script(monkeypatch, command, args, env, cwd)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err + message)
    return run


@pytest.fixture(scope="session")
def in_process_shared():
    """``in_process`` for module- and session-scoped fixtures (a set made once and read by many tests), which
    cannot use the function-scoped monkeypatch and capsys: the same run, its output caught by redirection."""
    def run(command, *args, env=None, cwd=None):
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            argv, code, message = _run_script(mp, command, args, env, cwd)
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue() + message)
    return run


@pytest.fixture
def fashion_test_cut(tmp_path, monkeypatch):
    """Fashion-MNIST's test split cut to its first 300 images wherever it is read (``data.load("test")``: the named
    set fashion-mnist-test, FashionMetric's reference), for a test whose claims do not depend on its size (the
    features of all 10000 take ~10 s on one thread); reference features are cached in the test's own folder, not in
    the session's cache that other tests read."""
    from tstitch.data.toy import data

    load = data.load

    def cut(split="train", root=None):
        x, y = load(split, root)
        return (x[:300], y[:300]) if split == "test" else (x, y)

    monkeypatch.setattr(data, "load", cut)
    monkeypatch.setenv("TSTITCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=["HF_HUB_OFFLINE", "no route"])
def hub_offline(request, monkeypatch):
    """The Hugging Face hub out of reach: by the HF_HUB_OFFLINE flag, or with no flag and no route (our probe must
    stop a load before the hub's ~25 s of retries)."""
    import huggingface_hub

    if request.param == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("tstitch.models.hub.socket.create_connection", refuse)


@pytest.fixture(scope="module")
def diffusers_quiet():
    """diffusers' warnings off for a module of tiny random pipelines (``pytestmark = usefixtures(...)``)."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    yield
    logging.set_verbosity(level)
