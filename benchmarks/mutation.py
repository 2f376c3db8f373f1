"""Mutation check over the core modules: can the tests fail? Each mutant is one plausible one-line bug (a swapped
operand, a dropped term, an inverted ratio, an off-by-one); it is applied to a temporary COPY of the repository,
the tests that should see it run there, and the mutant counts as killed when they fail. The working tree is never
written to.

The copy is the tree without .venv/, .git/, outputs/ and caches; the tests run from it with ``PYTHONPATH`` set to
it, and the script checks that ``tstitch`` is imported from the copy (the venv's editable install of the working
tree comes after ``PYTHONPATH`` on the import path). First, every test selection runs unmutated in the copy and
must pass (a failing baseline would count every mutant as killed); then each mutant is applied, its selection run
with ``-x``, and its file restored from the original.

    .venv/bin/python benchmarks/mutation.py                 # all mutants (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/mutation.py --only ddpm fast  # those whose name contains a word
    .venv/bin/python benchmarks/mutation.py --list

Prints one line per mutant (killed / SURVIVED, seconds), the kill rate and the survivors; exits 1 when a mutant
survives (or a snippet no longer matches its file: the list needs updating, named as such).
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
IGNORE = shutil.ignore_patterns(".venv", ".git", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache",
                                "*.egg-info", "wandb")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str          # relative to the repository
    original: str      # a snippet that occurs exactly once in the file
    replacement: str
    tests: tuple       # pytest arguments: test files, optionally "-k", "expression"


MUTANTS = [
    # the survivors (issue 22, "Tests that can fail")
    Mutant("report.add_speedups inverted", "tstitch/jobs/report/tables.py",
           'r["speedup"] = base["s_per_image"] / r["s_per_image"] if base else None',
           'r["speedup"] = r["s_per_image"] / base["s_per_image"] if base else None',
           ("tests/test_report.py", "-k", "speedup")),
    Mutant("identity.PARTS without decoder and prompts", "tstitch/jobs/identity.py",
           'PARTS = ("config", "checkpoints", "decoder", "seeds", "prompts")',
           'PARTS = ("config", "checkpoints", "seeds")',
           ("tests/test_identity_parts.py",)),
    Mutant("generate: resume compared without decoder and prompts", "tstitch/jobs/generate.py",
           "stored = identity.check(out, now, parts=identity.PARTS)",
           'stored = identity.check(out, now, parts=("config", "checkpoints", "seeds"))',
           ("tests/test_identity_parts.py",)),
    Mutant("ddpm small and large variances swapped", "tstitch/sampling/solvers/ddpm.py",
           'chain["log_var_clipped"] if variance == "small" else large',
           'large if variance == "small" else chain["log_var_clipped"]',
           ("tests/test_solvers.py", "-k", "ddpm")),
    Mutant("fast: bf16 without autocast", "tstitch/models/fast.py",
           "with torch.autocast(x.device.type, dtype=self.dtype):",
           "with torch.autocast(x.device.type, dtype=self.dtype, enabled=False):",
           ("tests/test_fast.py", "-k", "matches_plain and (bf16 or fp16)")),
    Mutant("train: MSE against x0 instead of the noise", "tstitch/jobs/train.py",
           "mse = (eps - noise).square().flatten(1).mean(1)",
           "mse = (eps - x0).square().flatten(1).mean(1)",
           ("tests/test_train.py", "-k", "not command")),
    Mutant("search.pick: the slowest that meets the target", "tstitch/jobs/search.py",
           'return min(ok, key=lambda r: r["s_per_image"]) if ok else None',
           'return max(ok, key=lambda r: r["s_per_image"]) if ok else None',
           ("tests/test_search.py", "-k", "pick")),
    # the rest of the core: stitch, sample, solvers, guidance, timing, report, identity, seeds, schedules, fast
    Mutant("schema: the sections are never checked", "tstitch/cli/schema.py",
           "validate(cfg, cls)", "cls",
           ("tests/test_schema.py", "-k", "shipped_defaults")),
    Mutant("report.add_speedups against the first member alone", "tstitch/jobs/report/tables.py",
           'b["fractions"][-1] == 1.0', 'b["fractions"][0] == 1.0',
           ("tests/test_report.py", "-k", "speedup")),
    Mutant("identity: directory hash by file names only", "tstitch/jobs/identity.py",
           'digest.update(f"{file.relative_to(path)}\\0{file_hash(file)}\\n".encode())',
           'digest.update(f"{file.relative_to(path)}\\n".encode())',
           ("tests/test_identity_parts.py",)),
    Mutant("guidance: conditional eps as the base", "tstitch/sampling/guidance.py",
           "eps_u[:, :k] + scale * (eps_c[:, :k] - eps_u[:, :k])",
           "eps_c[:, :k] + scale * (eps_c[:, :k] - eps_u[:, :k])",
           ("tests/test_protocols.py", "-k", "hand_written")),
    Mutant("guidance: halves swapped", "tstitch/sampling/guidance.py",
           "eps_c, eps_u = out.eps.chunk(2)", "eps_u, eps_c = out.eps.chunk(2)",
           ("tests/test_protocols.py", "-k", "hand_written")),
    Mutant("guidance: unguided channels from the unconditional half", "tstitch/sampling/guidance.py",
           "eps_c[:, k:]], dim=1)", "eps_u[:, k:]], dim=1)",
           ("tests/test_dit.py", "-k", "not official_sizes")),
    Mutant("stitch.allocate truncates instead of rounding", "tstitch/sampling/stitch.py",
           "math.floor(steps * c + 0.5 + 1e-9)", "math.floor(steps * c + 1e-9)",
           ("tests/test_stitch.py",)),
    Mutant("stitch.plan official rule on the second fraction", "tstitch/sampling/stitch.py",
           "return [0 if t / num_timesteps >= 1 - fractions[0] else 1 for t in timesteps]",
           "return [0 if t / num_timesteps >= 1 - fractions[1] else 1 for t in timesteps]",
           ("tests/test_stitch.py",)),
    Mutant("Stitch routes a call to the next step's member", "tstitch/sampling/stitch.py",
           "k = self.owner[c]", "k = self.owner[min(c + 1, len(self.owner) - 1)]",
           ("tests/test_stitch.py",)),
    Mutant("sample ignores the per-sample noise", "tstitch/sampling/sample.py",
           "randn_like=noise_source, clip=members[0].space.clip", "randn_like=torch.randn_like, "
           "clip=members[0].space.clip",
           ("tests/test_stitch.py", "tests/test_step_index.py")),
    Mutant("predict_x0 never clips", "tstitch/sampling/solvers/common.py",
           "return x0.clamp(-1, 1) if clip else x0", "return x0",
           ("tests/test_solvers.py", "-k", "clip")),
    Mutant("ddim: eta's sigma without the square root", "tstitch/sampling/solvers/ddim.py",
           "sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5",
           "sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev))",
           ("tests/test_solvers.py", "-k", "ddim")),
    Mutant("posterior mean: x_t coefficient without sqrt(alpha)", "tstitch/sampling/gaussian.py",
           '"coef_xt": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),',
           '"coef_xt": (1 - abar_prev) / (1 - abar),',
           ("tests/test_solvers.py", "-k", "ddpm")),
    Mutant("timing: speedup ratio inverted", "tstitch/jobs/timing.py",
           "return stats([a[r] / b[r] for r in rounds]", "return stats([b[r] / a[r] for r in rounds]",
           ("tests/test_timing.py",)),
    Mutant("timing.predict ignores the NFE", "tstitch/jobs/timing.py",
           "return Stats(sum(c.median * n for c, n in zip(costs, nfe))",
           "return Stats(sum(c.median for c, n in zip(costs, nfe))",
           ("tests/test_timing.py", "tests/test_search.py", "-k", "not search_")),
    Mutant("timing.interleaved never rotates the order", "tstitch/jobs/timing.py",
           "k = r % len(names)", "k = 0",
           ("tests/test_timing.py",)),
    Mutant("seeds: balanced labels by batch position", "tstitch/data/seeds.py",
           "y = torch.as_tensor([int(s) % num_classes for s in seeds], device=device)",
           "y = torch.as_tensor([i % num_classes for i, s in enumerate(seeds)], device=device)",
           ("tests/test_cli.py", "tests/test_fast.py", "tests/test_metrics.py", "-k", "debug_run or bf16 or fashion")),
    Mutant("schedules: linear betas not rescaled to T", "tstitch/models/schedules.py",
           "scale = 1000 / num_timesteps", "scale = 1.0",
           ("tests/test_schedules.py",)),
    Mutant("schedules: cosine without the offset s", "tstitch/models/schedules.py",
           "return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2", "return math.cos(u / (1 + s) * math.pi / 2) ** 2",
           ("tests/test_schedules.py", "tests/test_solvers.py", "-k", "cosine or schedule")),
    Mutant("fast: force ignored", "tstitch/models/fast.py",
           "if force or cap.native(precision):", "if cap.native(precision):",
           ("tests/test_fast.py", "-k", "precision or forced")),
]


def copy_tree(dest):
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def env_for(copy):
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def imported_from(copy):
    """Where ``tstitch`` is imported from in the copy's environment (must be inside the copy)."""
    out = subprocess.run([str(PYTHON), "-c", "import tstitch; print(tstitch.__file__)"], cwd=copy, env=env_for(copy),
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()).resolve()


def pytest(copy, tests, timeout, stop_first=True):
    """(passed, seconds, last lines) of ``tests`` run in the copy."""
    args = [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []), *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start, f"timed out after {timeout} s"
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return done.returncode == 0, time.perf_counter() - start, tail[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutants whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run (a timeout counts as killed)")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or any(w.lower() in m.name.lower() for w in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.file}: {m.original!r} -> {m.replacement!r}; {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="tstitch-mutation-") as tmp:
        copy = copy_tree(Path(tmp) / "repo")
        where = imported_from(copy)
        if copy.resolve() not in where.parents:
            sys.exit(f"tstitch is imported from {where}, not from the copy {copy}: refusing to run")
        print(f"{len(mutants)} mutants on a copy of {ROOT} ({where.parent}), {platform.node()}, "
              f"{os.cpu_count()} CPUs, python {platform.python_version()}", flush=True)
        stale = [m for m in mutants if (ROOT / m.file).read_text().count(m.original) != 1]
        for m in stale:
            print(f"STALE     {m.name}: {m.original!r} is not once in {m.file}; update the list")
        mutants = [m for m in mutants if m not in stale]
        baseline = {}
        for tests in dict.fromkeys(m.tests for m in mutants):
            ok, seconds, tail = pytest(copy, tests, args.timeout, stop_first=False)
            baseline[tests] = ok
            if not ok:
                print(f"BASELINE FAILS ({seconds:.0f} s): {' '.join(tests)}: {tail}; its mutants are not judged")
        killed, survived, total_seconds = [], [], 0.0
        for m in mutants:
            if not baseline[m.tests]:
                continue
            path = copy / m.file
            source = path.read_text()
            path.write_text(source.replace(m.original, m.replacement, 1))
            try:
                ok, seconds, tail = pytest(copy, m.tests, args.timeout)
            finally:
                path.write_text(source)
            total_seconds += seconds
            (survived if ok else killed).append(m)
            print(f"{'SURVIVED' if ok else 'killed  '} {seconds:6.1f} s  {m.name}  [{' '.join(m.tests)}]",
                  flush=True)
        judged = len(killed) + len(survived)
        rate = len(killed) / judged if judged else 0.0
        print(f"kill rate: {len(killed)}/{judged} = {rate:.0%} ({total_seconds:.0f} s of mutant test runs)")
        for m in survived:
            print(f"survivor: {m.name} ({m.file}: {m.original!r} -> {m.replacement!r})")
        unjudged = len(stale) + sum(1 for m in mutants if not baseline[m.tests])
        if unjudged:
            print(f"not judged: {unjudged} (stale snippet or failing baseline)")
    return 1 if survived or unjudged else 0


if __name__ == "__main__":
    sys.exit(main())
