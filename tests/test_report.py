"""`tstitch-report`: a Hydra multirun over allocations becomes one table and one plot."""
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def test_multirun_is_reported_as_one_table(tmp_path, in_process):
    # in-process; the installed commands run in test_install (the wheel) and their errors in test_cli and below
    r = in_process("tstitch", "-m", "+debug=tiny", "sweep=null", "stitch.fractions=[1.0,0.0],[0.0,1.0],[0.5,0.5]",
                   f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-report", tmp_path, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert "toy-dit-small : toy-dit-large" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "0.5 : 0.5", "1 : 0"]
    assert "| 1.00x |" in table[2] and (tmp_path / "report" / "tradeoff.png").exists()
    assert "3 allocations from 3 runs" in r.stdout


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, in_process_shared):
    """Three tiny single-allocation runs (0, 1, 2) of one multirun, made once."""
    root = tmp_path_factory.mktemp("runs")
    r = in_process_shared("tstitch", "-m", "+debug=tiny", "sweep=null", "metric=none",
                          "stitch.fractions=[1.0,0.0],[0.0,1.0],[0.5,0.5]", f"hydra.sweep.dir={root}")
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.name.startswith("results.")}


def test_a_report_never_writes_into_the_runs_it_reads(three_runs, tmp_path, in_process):
    """The issue's case: `tstitch-report runA runB` overwrote runA's results with the two-run table."""
    a, b = three_runs / "0", three_runs / "1"
    before = snapshot(a), snapshot(b)
    r = in_process("tstitch-report", a, b, "--out", tmp_path / "ab")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (snapshot(a), snapshot(b)) == before
    assert len((tmp_path / "ab" / "results.jsonl").read_text().splitlines()) == 2
    r = in_process("tstitch-report", a, "--out", tmp_path / "a")
    assert r.returncode == 0 and "1 allocations from 1 runs" in r.stdout
    assert len((tmp_path / "a" / "results.jsonl").read_text().splitlines()) == 1


def test_default_output_is_a_new_directory_it_names(three_runs, tmp_path, in_process):
    r = in_process("tstitch-report", three_runs / "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (made,) = (tmp_path / "outputs" / "report").iterdir()
    assert f"report in {Path('outputs') / 'report' / made.name}" in r.stdout
    assert (made / "results.md").exists() and (made / "report.json").exists()


def test_a_run_directory_is_refused_as_the_output(three_runs, in_process):
    before = snapshot(three_runs / "1")
    r = in_process("tstitch-report", f"runs={three_runs / '0'}", f"out={three_runs / '1'}")
    assert r.returncode == 2 and r.stderr.strip() == (f"tstitch-report: error: {three_runs / '1'} holds a run's "
                                                      "results; give the report its own directory (out=...)")
    assert snapshot(three_runs / "1") == before


def test_a_truncated_run_is_skipped_with_one_line_and_the_rest_reported(three_runs, tmp_path, in_process):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(three_runs, sweep)
    results = sweep / "2" / "results.jsonl"
    results.write_text(results.read_text()[:25])  # killed while writing
    r = in_process("tstitch-report", f"runs={sweep}", f"out={tmp_path / 'report'}")
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip() == (f"tstitch-report: skipped {results} line 1 is not valid JSON (a run killed while "
                                "writing it?)")
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "1 : 0"]
    assert "2 allocations from 2 runs (1 skipped)" in r.stdout


def test_no_results_is_one_line_error(tmp_path):
    """Through the installed command: exit code 2 and exactly one line."""
    r = subprocess.run([str(BIN / "tstitch-report"), f"runs={tmp_path}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (f"tstitch-report: error: no results.jsonl below {tmp_path}; "
                                                      "give tstitch run directories")


def test_generation_multirun_and_its_wandb_offline_runs_are_reported(tmp_path, in_process):
    """tstitch-generate runs (one allocation each, speedup measured in-run) report like the sweep; the W&B
    offline runs alone (e.g. copied from a cluster) give the same table."""
    import shutil

    r = in_process("tstitch-generate", "-m", "stitch.fractions=[0.0,1.0],[0.5,0.5]", "num_samples=10", "batch_size=10",
                   "solver.steps=4", "logger.mode=offline", f"hydra.sweep.dir={tmp_path / 'm'}",
                   env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-2000:]
    for d in ("m", "w"):
        if d == "w":
            for k, run in enumerate(sorted((tmp_path / "m").glob("*/wandb/offline-run-*"))):
                shutil.copytree(run, tmp_path / "w" / f"{k}" / run.name)
        r = in_process("tstitch-report", tmp_path / d, "--out", tmp_path / f"report-{d}")
        assert r.returncode == 0, r.stderr[-2000:]
        table = (tmp_path / f"report-{d}" / "results.md").read_text().splitlines()
        assert "toy-dit-small : toy-dit-large" in table[0] and "FD" in table[0] and "class acc." in table[0]
        assert [line.split("|")[1].strip() for line in table[2:]] == ["0 : 1", "0.5 : 0.5"]
        assert "| 1.00x |" in table[2] and (tmp_path / f"report-{d}" / "tradeoff.png").exists()
    assert (tmp_path / "report-m" / "results.md").read_text() == (tmp_path / "report-w" / "results.md").read_text()
    # the members' records (per-member lists) come back from the W&B table: the same footprint table
    footprint = (tmp_path / "report-m" / "footprint.md").read_text()
    assert footprint == (tmp_path / "report-w" / "footprint.md").read_text() and "parameters (M)" in footprint


# ---------------------------------------------------------------------------------------- tables and plots

def rows_of(settings=(None,), times=None, paper=None, quality="fd"):
    """Two-member rows at fractions 0, 0.3, 0.4, 1 of the first member: times (s) and quality per setting."""
    out = []
    for k, st in enumerate(settings):
        for j, f in enumerate((0.0, 0.3, 0.4, 1.0)):
            row = {"fractions": [f, 1 - f], "s_per_image": (times or [0.100, 0.0701, 0.0700, 0.01])[j],
                   quality: [90.0, 84.0, 84.2, 600.0][j] + k}
            if st is not None:
                row["setting"] = st
            if paper is not None:
                row["paper"], row["paper_metric"] = paper[j], "fid"
            out.append(row)
    return out


def test_times_of_a_table_are_in_one_unit():
    from tstitch.jobs.report import markdown

    def cells(rows):
        return [line.split("|")[2].strip() for line in markdown(rows, ["a", "b"]).splitlines()[2:]]

    assert cells(rows_of(times=[0.34637, 0.2, 0.1, 0.004])) == ["346.37 ms", "200.00 ms", "100.00 ms", "4.00 ms"]
    assert cells(rows_of(times=[0.34637, 1.591, 13.6, 0.004])) == ["0.3464 s", "1.591 s", "13.6 s", "0.004 s"]


def boxes(fig, ax):
    """Pixel extents of the labels of ``ax`` (a closed figure gets its Agg canvas back)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    return [t.get_window_extent(renderer) for t in ax.texts]


def test_labels_never_collide_and_stay_inside(tmp_path):
    import matplotlib.pyplot as plt

    from tstitch.jobs.report import place_labels

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    points = [(10 + 0.02 * k, 80 + 0.05 * k) for k in range(6)] + [(30, 120), (50, 60)]  # six in a clump
    ax.plot(*zip(*points), "o")
    ax.set_xlim(0, 60)
    ax.set_ylim(40, 140)
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    naive = [ax.annotate("0.3", p, textcoords="offset points", xytext=(4, 3), fontsize=6) for p in points]
    assert any(a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))
               for i, a in enumerate(naive) for b in naive[i + 1:])  # what fixed offsets did
    for a in naive:
        a.remove()
    placed = place_labels(ax, points, [f"0.{k}" for k in range(len(points))])
    extents = boxes(fig, ax)
    assert len(extents) == len(placed) >= 4 and {"0.6", "0.7"} <= {a.get_text() for a in placed}
    assert not [(i, j) for i in range(len(extents)) for j in range(i + 1, len(extents))
                if extents[i].overlaps(extents[j])]
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in extents)
    plt.close(fig)


def test_tradeoff_plot_has_fraction_and_time_panels_the_paper_curve_and_the_last_member_alone(tmp_path):
    from tstitch.jobs.report import tradeoff_plot

    paper = [9.20, 9.03, 8.95, 33.46]
    fig = tradeoff_plot(rows_of(("solver=ddim", "solver=ddpm"), paper=paper), ["small", "large"],
                        tmp_path / "t.png", paper_label="paper FID-5K")
    assert (tmp_path / "t.png").exists()
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_xlabel() == "fraction of steps on small" and right.get_xlabel() == "ms per image (measured)"
    twin = next(ax for ax in fig.axes[2:] if ax.get_ylabel().startswith("paper FID-5K"))  # toy FD vs the paper FID
    dashed = [line for line in twin.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2 and list(dashed[0].get_ydata()) == paper and list(dashed[0].get_xdata()) == [0, .3, .4, 1]
    stars = [line for line in left.get_lines() if line.get_marker() == "*"]
    assert [list(s.get_xdata()) for s in stars] == [[0.0], [0.0]]
    assert "large alone" in [t.get_text() for t in left.get_legend().get_texts()]
    assert [list(s.get_xdata()) for s in right.get_lines() if s.get_marker() == "*"] == [[100.0], [100.0]]
    extents = boxes(fig, right)
    assert extents and not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1:])


def test_paper_curve_of_the_same_metric_shares_the_axis_and_times_alone_get_a_panel(tmp_path):
    from tstitch.jobs.report import tradeoff_plot

    fig = tradeoff_plot(rows_of(paper=[9.2, 9.0, 8.9, 33.5], quality="fid"), ["s", "xl"], tmp_path / "t.png")
    assert len(fig.axes) == 2 and [line.get_linestyle() for line in fig.axes[0].get_lines()].count("--") == 1
    rows = [{k: v for k, v in r.items() if k != "fd"} for r in rows_of(times=[13.6, 11.0, 10.6, 8.8])]
    for r, v in zip(rows, [13.6, 11.05, 10.6, 8.8]):
        r["paper"], r["paper_metric"] = v, "s_per_image"
    fig = tradeoff_plot(rows, ["ssd-1b", "sdxl"], tmp_path / "s.png", paper_label="paper s/image")
    (ax,) = fig.axes[:1]
    assert ax.get_ylabel() == "s per image" and len(fig.axes) == 1  # metric=none: time against the fraction
    assert [list(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == "--"] == [
        [13.6, 11.05, 10.6, 8.8]]


def test_grid_has_a_header_naming_members_and_columns(tmp_path):
    import torch

    from tstitch.jobs.report import column_labels, image_grid

    columns = column_labels(torch.tensor([0, 9, 3]), "fashion-mnist")
    assert columns == ["T-shirt/top", "Ankle boot", "Dress"]
    assert column_labels([1, 0], prompts=["a cat", "a dog"]) == ["a dog", "a cat"]
    assert column_labels([2], None) == ["class 2"] and column_labels(["a red bus"]) == ["a red bus"]
    grids = [torch.zeros(3, 1, 28, 28, dtype=torch.uint8)] * 2
    fig = image_grid(grids, tmp_path / "g.png", ["0 : 1", "1 : 0"], title="rows: small : large", columns=columns)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == columns and ax.xaxis.get_ticks_position() == "top"
    assert [t.get_text() for t in fig.texts] == ["rows: small : large"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 : 1", "1 : 0"] and (tmp_path / "g.png").exists()


def test_wandb_runs_inside_reported_run_dirs_are_not_counted_twice(tmp_path, in_process):
    """A multirun over solvers with W&B on: each job directory holds its results.jsonl and its own offline W&B run
    (wandb/offline-run-*); the report has one row per setting and allocation, none from the W&B copies."""
    import json

    for job, solver in enumerate(("ddim", "ddpm")):
        run = tmp_path / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- solver={solver}\n- +experiment=toy_samplers\n")
        rows = [{"fractions": [f, 1 - f], "nfe": [0, 4], "s_per_image": 0.01 + job, "fd": 90.0 + job} for f in (0, 1)]
        (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "run.json").write_text(json.dumps({"members": ["a", "b"], "config": {}}))
        table = run / "wandb" / "offline-run-1" / "files" / "media" / "table" / "results_0_x.table.json"
        table.parent.mkdir(parents=True)
        table.write_text(json.dumps({"columns": ["members", "fractions", "fd"],
                                     "data": [['["a", "b"]', json.dumps(r["fractions"]), r["fd"]] for r in rows]}))
    r = in_process("tstitch-report", tmp_path, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 allocations from 2 runs" in r.stdout
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    settings = [line.split("|")[1].strip() for line in table[2:]]
    assert settings == ["solver=ddim", "solver=ddim", "solver=ddpm", "solver=ddpm"]


def test_speedups_of_every_row_against_the_last_member_alone_of_its_setting():
    """Known times: each row's speedup is (the setting's last-member-alone time) / (its own time), > 1 for a faster
    row; a speedup measured in the row's own run stands; a setting without a last-member-alone row gets None."""
    from tstitch.jobs.report import add_speedups

    rows = [{"setting": "a", "fractions": [0.0, 1.0], "s_per_image": 2.0},
            {"setting": "a", "fractions": [0.5, 0.5], "s_per_image": 1.0},
            {"setting": "a", "fractions": [1.0, 0.0], "s_per_image": 0.5},
            {"setting": "a", "fractions": [0.3, 0.7], "s_per_image": 4.0},
            {"setting": "b", "fractions": [0.0, 1.0], "s_per_image": 3.0},
            {"setting": "b", "fractions": [0.4, 0.6], "s_per_image": 1.2},
            {"setting": "b", "fractions": [0.2, 0.8], "s_per_image": 1.0, "speedup": 2.5},  # measured in-run
            {"setting": "c", "fractions": [0.5, 0.5], "s_per_image": 1.0}]
    out = add_speedups(rows)
    assert [r["speedup"] for r in out[:-1]] == pytest.approx([1.0, 2.0, 4.0, 0.5, 1.0, 2.5, 2.5])
    assert out[-1]["speedup"] is None


def test_the_report_gives_each_row_its_speedup_from_known_times(tmp_path, in_process):
    """Through ``tstitch-report``: two runs of a multirun over solvers with known times and no in-run speedup."""
    import json

    times = {"ddim": {0.0: 0.8, 0.4: 0.5, 1.0: 0.2}, "ddpm": {0.0: 1.5, 0.4: 0.6, 1.0: 0.3}}
    for job, (solver, by_first) in enumerate(times.items()):
        run = tmp_path / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- solver={solver}\n")
        rows = [{"fractions": [f, 1 - f], "nfe": [0, 4], "s_per_image": s, "fd": 90.0} for f, s in by_first.items()]
        (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "run.json").write_text(json.dumps({"members": ["a", "b"], "config": {}}))
    r = in_process("tstitch-report", tmp_path, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-2000:]
    got = {(row["setting"], row["fractions"][0]): row["speedup"]
           for row in map(json.loads, (tmp_path / "report" / "results.jsonl").read_text().splitlines())}
    assert got == pytest.approx({("solver=ddim", 0.0): 1.0, ("solver=ddim", 0.4): 1.6, ("solver=ddim", 1.0): 4.0,
                                 ("solver=ddpm", 0.0): 1.0, ("solver=ddpm", 0.4): 2.5, ("solver=ddpm", 1.0): 5.0})


def test_both_spellings_give_the_same_report_and_the_old_one_says_the_new(three_runs, tmp_path, in_process):
    """``tstitch-report runs=[A,B] out=OUT`` and the spelling of before, ``tstitch-report A B --out OUT``: the same
    table; the old one runs with exactly one line on stderr naming the new spelling (a path with a space quoted)."""
    import shutil

    a, b = three_runs / "0", tmp_path / "run b"
    shutil.copytree(three_runs / "1", b)
    new = in_process("tstitch-report", f"runs=[{a},'{b}']", f"out={tmp_path / 'new'}")
    old = in_process("tstitch-report", a, b, "--out", tmp_path / "old")
    assert new.returncode == old.returncode == 0, new.stderr[-2000:] + old.stderr[-2000:]
    assert new.stderr == "" and old.stderr.splitlines() == [
        f"tstitch-report: the --flag spelling is deprecated; this runs as: tstitch-report "
        f"'runs=[{a},'\"'\"'{b}'\"'\"']' out={tmp_path / 'old'}"]
    assert (tmp_path / "new" / "results.md").read_text() == (tmp_path / "old" / "results.md").read_text()
    assert len((tmp_path / "new" / "results.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(p.name for p in (tmp_path / "old").iterdir())
    assert "report.log" in {p.name for p in (tmp_path / "new").iterdir()}  # the run's log beside its table
    assert not (tmp_path / "new" / ".hydra").exists()  # report.json records the sources
    one = in_process("tstitch-report", f"runs={a}", f"out={tmp_path / 'one'}")  # one directory, no list
    assert one.returncode == 0 and "1 allocations from 1 runs" in one.stdout, one.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    ([], "give runs=DIR (a run, multirun or W&B directory), or several: runs=[DIR,DIR]"),
    (["runs=true"], "runs=True is not a directory or a list of them; give runs=DIR or runs=[DIR,DIR] (quote a path "
                    "Hydra would read otherwise: runs='...')"),
    (["runs=[]"], "runs=[] is not a directory or a list of them"),
])
def test_runs_that_name_no_directory_are_one_line(tmp_path, in_process, args, message):
    r = in_process("tstitch-report", *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith(f"tstitch-report: error: {message}"), r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []  # nothing made


# ---------------------------------------------------------------------- the paper's values and Table 8 (footprint)

def dit_s_xl_config():
    """The resolved config of experiment=dit_s_xl (its paper block: FID, Table 9's precision/recall, Table 8)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tstitch.cli import CONF

    with initialize_config_dir(CONF, version_base=None):
        return OmegaConf.to_container(compose("generate", ["experiment=dit_s_xl"]), resolve=False)


def cells_of(text):
    """A markdown table as {header: [cells]}."""
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.strip().splitlines()]
    return {h: [row[i] for row in lines[2:]] for i, h in enumerate(lines[0])}


def test_the_papers_precision_and_recall_are_printed_beside_ours_at_each_fraction():
    """Table 9 from the dit_s_xl paper block: each row's paper FID, precision and recall at its own fraction (not
    shifted, not another row's), in our format, after our columns, the headline FID last as ever; without our
    precision none of the paper's."""
    from tstitch.jobs.report import add_paper, latex, markdown

    fractions = [0.0, 0.2, 0.4, 0.5, 0.9, 1.0]
    rows = [{"fractions": [f, 1 - f], "nfe": [round(100 * f), 100 - round(100 * f)], "fid": 10.0 + f,
             "precision": 0.5 + f / 10, "recall": 0.4 + f / 10} for f in fractions]
    label = add_paper(rows, dit_s_xl_config())
    table = cells_of(markdown(rows, ["DiT-S", "DiT-XL"], label))
    assert list(table)[-5:] == ["precision", "recall", "paper precision", "paper recall", "paper FID-5K"]
    assert table["fractions (DiT-S : DiT-XL)"] == ["0 : 1", "0.2 : 0.8", "0.4 : 0.6", "0.5 : 0.5", "0.9 : 0.1", "1 : 0"]
    assert table["paper FID-5K"] == ["9.20", "8.99", "8.95", "10.06", "30.11", "33.46"]
    assert table["paper precision"] == ["0.8100", "0.8100", "0.8000", "0.7600", "0.5900", "0.5800"]
    assert table["paper recall"] == ["0.7400", "0.7400", "0.7500", "0.7500", "0.6500", "0.6300"]
    assert table["precision"][3] == "0.5500"  # ours stay ours
    tex = latex(rows, ["DiT-S", "DiT-XL"], label).splitlines()
    assert tex[5].endswith("& paper precision & paper recall & paper FID-5K \\\\")
    assert tex[10].endswith("& 0.7600 & 0.7500 & 10.06 \\\\")  # the 0.5 row
    ours_only = [{k: v for k, v in r.items() if k not in ("precision", "recall")} for r in rows]
    head = markdown(ours_only, ["DiT-S", "DiT-XL"], label).splitlines()[0]
    assert head.endswith("| FID | paper FID-5K |") and "paper precision" not in head


def test_a_paper_block_of_values_alone_reads_as_before():
    """The block of every experiment made before (``values`` of one metric): the matching curve's value at each
    row's fraction, None where the curve has none; a further list is a further column, null skipped."""
    from tstitch.jobs.report import add_paper

    rows = [{"fractions": f} for f in ([0.0, 1.0], [0.5, 0.5], [0.75, 0.25])]
    config = {"solver": {"steps": 10}, "paper": {"label": "paper FID", "metric": "fid", "curves": [
        {"match": {"solver.steps": 20}, "first": [0.0, 0.5], "values": [1.0, 2.0]},
        {"match": {"solver.steps": 10}, "first": [0.0, 0.5], "values": [3.0, 4.0], "isc": [None, 7.0]}]}}
    assert add_paper(rows, config) == "paper FID"
    assert rows == [{"fractions": [0.0, 1.0], "paper": 3.0, "paper_metric": "fid"},
                    {"fractions": [0.5, 0.5], "paper": 4.0, "paper_metric": "fid", "paper_isc": 7.0},
                    {"fractions": [0.75, 0.25]}]


def test_footprint_table_sums_the_members_a_row_calls_beside_table_8():
    """footprint.md's values from the records: parameters and storage of the members with NFE > 0, storage
    unknown for one of them -> '-', peak memory in MiB; the paper's Table 8 at 0, 0.5 and 1."""
    from tstitch.jobs.report import add_paper, footprint_markdown, footprint_of

    records = {"params": [33_000_000, 675_000_000], "param_bytes": [132_000_000, 2_700_000_000],
               "storage_bytes": [263 * 2 ** 20, 2576 * 2 ** 20]}
    rows = [{"fractions": [f, 1 - f], "nfe": [n, 100 - n], **records, "peak_memory_bytes": (3000 + n) * 2 ** 20,
             "s_per_image": 2.0 - f} for f, n in ((0.0, 0), (0.4, 40), (0.5, 50), (1.0, 100))]
    rows[1]["storage_bytes"] = [None, 2576 * 2 ** 20]  # the small member's file unknown
    assert footprint_of(rows[0]) == pytest.approx({"params_m": 675.0, "encoder_params_m": None,
                                                   "weights_mb": 2_700_000_000 / 2 ** 20, "storage_mb": 2576.0,
                                                   "peak_memory_mb": 3000.0})
    assert footprint_of(rows[1])["storage_mb"] is None and footprint_of(rows[3])["params_m"] == 33.0
    add_paper(rows, dit_s_xl_config())
    table = cells_of(footprint_markdown(rows, ["DiT-S", "DiT-XL"]))
    assert list(table) == ["fractions (DiT-S : DiT-XL)", "parameters (M)", "weights (MiB)", "storage (MiB)",
                           "peak memory (MiB)", "s/image", "paper parameters (M)", "paper storage (MiB)",
                           "paper peak memory (MiB)", "paper s / 8 images"]
    assert table["parameters (M)"] == ["675", "708", "708", "33"]
    assert table["storage (MiB)"] == ["2576", "-", "2839", "263"]
    assert table["peak memory (MiB)"] == ["3000", "3040", "3050", "3100"]
    assert table["paper parameters (M)"] == ["675", "-", "708", "33"]
    assert table["paper storage (MiB)"] == ["2576", "-", "2839", "263"]
    assert table["paper peak memory (MiB)"] == ["3166", "-", "3296", "3088"]
    assert table["paper s / 8 images"] == ["16.5", "11", "9.4", "1.7"]


def test_records_are_flat_columns_and_come_back_with_unknowns_in_place():
    from tstitch.cli.report import Unreadable, check_row
    from tstitch.jobs.columns import flat, unflat

    row = {"fractions": [0.5, 0.5], "nfe": [1, 1], "params": [10, 20], "param_bytes": [40, 80],
           "storage_bytes": [None, 99], "encoder_params": [5, 6], "peak_memory_bytes": 123}
    names = ["s", "param_bytes_x"]  # a member whose name looks like a prefix
    flat_row = flat(row, names)
    assert flat_row["storage_bytes_s"] is None and flat_row["params_param_bytes_x"] == 20
    assert flat_row["encoder_params_s"] == 5 and flat_row["param_bytes_param_bytes_x"] == 80
    back, members = unflat(flat_row)
    assert back == row and members == names
    check_row(row, "here", 2)
    with pytest.raises(Unreadable, match="storage_bytes is .*not a list of numbers or nulls"):
        check_row({**row, "storage_bytes": ["big", 1]}, "here", 2)


def test_toy_runs_record_their_members_and_the_report_writes_table_8(three_runs, tmp_path, in_process):
    """Every row of a tstitch run records the toy members' parameters (their networks' numel), the bytes of their
    shipped weight files (fp16 safetensors: half the fp32 parameter bytes, plus a header) and no peak memory on a
    CPU; the report's footprint.md sums the members each allocation calls."""
    import json

    from tstitch.models import zoo
    from tstitch.models.checkpoints import resolve

    r = in_process("tstitch-report", f"runs={three_runs}", f"out={tmp_path / 'report'}")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "report" / "results.jsonl").read_text().splitlines()]
    entries = [zoo.entry("toy/small"), zoo.entry("toy/large")]
    nets = [zoo.load(e).net for e in entries]
    params = [sum(p.numel() for p in n.parameters()) for n in nets]
    stored = [resolve(e["checkpoint"]).stat().st_size for e in entries]
    for row in rows:
        assert row["params"] == params and row["param_bytes"] == [4 * n for n in params]
        assert row["storage_bytes"] == stored and row["peak_memory_bytes"] is None and "encoder_params" not in row
    assert stored[1] < row["param_bytes"][1]  # the file, not the parameters' fp32 bytes: it is measured
    table = cells_of((tmp_path / "report" / "footprint.md").read_text())
    assert table["fractions (toy-dit-small : toy-dit-large)"] == ["0 : 1", "0.5 : 0.5", "1 : 0"]
    assert table["parameters (M)"] == [f"{v:.4g}" for v in (params[1] / 1e6, sum(params) / 1e6, params[0] / 1e6)]
    assert table["storage (MiB)"] == [f"{v:.4g}" for v in (stored[1] / 2 ** 20, sum(stored) / 2 ** 20,
                                                           stored[0] / 2 ** 20)]
    assert "peak memory (MiB)" not in table  # none measured on a CPU: the column is left out


def test_every_paper_list_names_a_column_of_ours_and_its_numbers_are_in_docs_paper_md():
    """Each list of every experiment's paper curves (besides ``values``) is named by a key the report knows
    (``paper_keys``), is as long as ``first``, and its numbers are docs/paper.md's: a whole list a row of one of its
    tables, a list with gaps (Table 8's three rows) numbers printed there."""
    import re

    from hydra import compose, initialize_config_dir

    from tstitch.cli import CONF
    from tstitch.jobs.report import paper_keys

    root = Path(__file__).resolve().parents[1]
    lines = [line for line in (root / "docs" / "paper.md").read_text().splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    printed = {float(c) for row in rows for c in row if re.fullmatch(r"\d+(\.\d+)?", c)}
    known = {k for k, _ in paper_keys()}
    checked = 0
    for path in sorted((root / "conf" / "experiment").glob("*.yaml")):
        command = "tstitch" if path.stem.startswith("toy") else "generate"
        with initialize_config_dir(CONF, version_base=None):
            cfg = compose(command, [f"experiment={path.stem}"])
        for curve in (cfg.get("paper") or {}).get("curves", []):
            for key, values in curve.items():
                if key in ("match", "first", "values"):
                    continue
                assert key in known and len(values) == len(curve.first), (path.stem, key)
                numbers = [float(v) for v in values if v is not None]
                if len(numbers) == len(values):
                    assert any([float(c) if re.fullmatch(r"[\d.]+", c) else None for c in row[1:]] == numbers
                               for row in rows), (path.stem, key)
                assert set(numbers) <= printed, (path.stem, key)
                checked += 1
    assert checked >= 6  # dit_s_xl: precision, recall, time, and Table 8's three
