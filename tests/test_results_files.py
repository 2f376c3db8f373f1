"""What a run leaves where people look: results.csv with a number in every cell (a column per member), results.tex
for a paper, FD/FID intervals in the table and the plot, and the W&B run (typed table, images, artifacts) that
tstitch-report reads back into results.jsonl's rows."""
import csv
import json
import shutil
import subprocess
import time

import pytest
from omegaconf import OmegaConf

from tstitch.jobs import report, tracking

MEMBERS = ["toy-dit-small", "toy-dit-large"]


def rows():
    """Three rows as a sweep writes them: lists, times with quartiles, FD with its interval, a flagged time, text."""
    return [
        {"fractions": [0.0, 1.0], "nfe": [0, 10], "s_per_image": 0.0200, "s_per_image_p25": 0.0190,
         "s_per_image_p75": 0.0210, "speedup": 1.0, "speedup_p25": 1.0, "speedup_p75": 1.0, "fd": 30.5,
         "fd_p5": 31.25, "fd_p95": 40.0, "accuracy": 0.9},
        {"fractions": [0.4, 0.6], "nfe": [4, 6], "s_per_image": 0.0150, "s_per_image_p25": 0.0140,
         "s_per_image_p75": 0.0160, "speedup": 1.3333, "speedup_p25": 1.25, "speedup_p75": 1.4, "fd": 35.5,
         "fd_p5": 36.0, "fd_p95": 45.25, "accuracy": 0.85, "timing_flag": "p75/p25 = 1.6 (noisy)"},
        {"fractions": [1.0, 0.0], "nfe": [10, 0], "s_per_image": 0.0050, "speedup": None, "fd": 90.0,
         "accuracy": 0.5},
    ]


def test_csv_has_a_number_in_every_cell_and_a_column_per_member(tmp_path):
    report.write_table(rows(), MEMBERS, tmp_path)
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:4] == ["fraction_toy-dit-small", "fraction_toy-dit-large", "nfe_toy-dit-small",
                                  "nfe_toy-dit-large"]
    assert {"fd_p5", "fd_p95", "s_per_image_p25", "speedup_p75", "timing_flag"} <= set(table[0])
    for line, row in zip(table, rows()):
        assert [float(line[f"fraction_{m}"]) for m in MEMBERS] == row["fractions"]
        assert [float(line[f"nfe_{m}"]) for m in MEMBERS] == row["nfe"]
        for key, value in line.items():  # every other cell a number, the row's own, or empty where it has none
            if key.startswith(("fraction_", "nfe_")) or key == "timing_flag":
                continue
            assert float(value) == row[key] if row.get(key) is not None else value == "", key
    assert table[2]["fd_p5"] == "" and table[1]["timing_flag"] == "p75/p25 = 1.6 (noisy)"
    kept = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert kept[1]["fractions"] == [0.4, 0.6] and kept[1]["nfe"] == [4, 6]  # the JSON lines keep their lists


def test_markdown_shows_the_fd_interval_beside_the_fd():
    table = report.markdown(rows(), MEMBERS).splitlines()
    assert "| FD (p5-p95) |" in table[0] and "| s/image (p25-p75) |" in table[0] and "fd_p5" not in table[0]
    assert "| 30.50 (31.25-40.00) |" in table[2] and "| 90.00 |" in table[4]


def test_latex_table_escapes_names_and_has_a_line_per_row():
    members = ["dit_s%2", "dit&xl"]
    text = report.latex([{**r, "setting": "solver=ddim_2"} for r in rows()], members)
    lines = text.splitlines()
    body = lines[lines.index("\\midrule") + 1:lines.index("\\bottomrule")]
    assert lines[1].startswith("\\begin{tabular}") and "\\toprule" in lines and lines[-1] == "\\end{tabular}"
    assert len(body) == 3 and all(line.endswith(" \\\\") for line in body)
    head = lines[lines.index("\\midrule") - 1]
    assert head.split(" & ")[1:3] == ["dit\\_s\\%2", "dit\\&xl"] and "dit_s" not in "\n".join(lines[1:])
    assert "\\multicolumn{2}{c}{fraction of steps}" in text and "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5}" in text
    assert "ms/image (p25-p75)" in head and "FD (p5-p95)" in head
    cells = body[1].removesuffix(" \\\\").split(" & ")
    assert cells[:5] == ["solver=ddim\\_2", "0.4", "0.6", "4", "6"] and "15.00 (14.00--16.00)" in cells
    assert "1.33$\\times$ (1.25--1.40)" in cells and "35.50 (36.00--45.25)" in cells and "85.0\\%" in cells
    assert body[2].split(" & ")[6] == "--"  # no speedup: a dash
    assert report.tex("a_b%c&d\\e") == "a\\_b\\%c\\&d\\textbackslash{}e"


def test_write_table_writes_the_latex_table_beside_the_markdown(tmp_path):
    report.write_table(rows(), MEMBERS, tmp_path)  # tstitch-report writes its merged table through it too
    assert (tmp_path / "results.tex").read_text() == report.latex(rows(), MEMBERS)


def test_latex_table_compiles(tmp_path):
    pdflatex = shutil.which("pdflatex") or pytest.skip("pdflatex is not installed")
    (tmp_path / "results.tex").write_text(report.latex(rows(), ["dit_s%2", "dit&xl"]))
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}"
                                        "\\begin{table}\\input{results.tex}\\end{table}\\end{document}\n")
    r = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]


def test_tradeoff_plot_draws_the_fd_interval_where_it_lies(tmp_path):
    fig = report.tradeoff_plot(rows(), MEMBERS, tmp_path / "t.png")
    left, right = fig.axes[0], fig.axes[1]
    (bars,) = left.collections[-1:]  # vertical lines from p5 to p95, even above the point (a bootstrap's)
    assert [seg.tolist() for seg in bars.get_segments()] == [[[0.0, 31.25], [0.0, 40.0]], [[0.4, 36.0], [0.4, 45.25]]]
    segs = [seg.tolist() for c in right.collections for seg in c.get_segments() if c.get_linestyle()]
    assert [[20.0, 31.25], [20.0, 40.0]] in segs
    assert "p5-p95 (bootstrap over the samples)" in [t.get_text() for t in left.get_legend().get_texts()]


def test_flat_columns_round_trip_and_stay_unique():
    names = report.member_names(["a", "a", "b"], [{"fractions": [0.2, 0.3, 0.4, 0.1]}])
    assert names == ["a#0", "a#1", "b", "member3"]
    row = {"fractions": [0.5, 0.5], "nfe": [2, 2], "fd": 1.0, "setting": "x"}
    flat = report.flat(row, ["s", "l"])
    assert flat == {"fraction_s": 0.5, "fraction_l": 0.5, "nfe_s": 2, "nfe_l": 2, "fd": 1.0, "setting": "x"}
    assert report.unflat(flat) == (row, ["s", "l"])


def staged_tables(data_dir):
    """The W&B table files staged for upload (with their column types)."""
    for p in (data_dir / "artifacts" / "staging").iterdir():
        try:
            t = json.loads(p.read_text())
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(t, dict) and t.get("_type") == "table":
            yield t


def test_offline_wandb_run_round_trips_the_rows_with_typed_columns_images_and_artifacts(tmp_path, monkeypatch):
    for key, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    out.mkdir()
    written = [{**r, "setting": "solver=ddim"} for r in rows()]
    report.write_table(written, MEMBERS, out)
    report.tradeoff_plot(written, MEMBERS, out / "tradeoff.png")
    (out / "samples.npz").write_bytes(b"\x93" * 5000)  # "large": over the copy limit of this test
    logger_cfg = OmegaConf.create({"mode": "offline", "project": "p", "entity": None, "name": None, "group": None,
                                   "tags": []})
    logger = tracking.wandb_logger(logger_cfg, out, [r["fractions"] for r in written])
    tracking.log_results(logger, {"stitch": {"fractions": [r["fractions"] for r in written]}}, written, MEMBERS,
                         {"git": "abc"}, [out / "tradeoff.png"],
                         {"results": [out / f for f in report.RESULT_FILES], "samples": [out / "samples.npz"]},
                         copy_limit=4096)
    (run,) = (out / "wandb").glob("offline-run-*")
    back, members = tracking.read_offline(run)
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert members == MEMBERS
    assert back == [{k: v for k, v in r.items() if v is not None} for r in jsonl]  # null there: absent here
    (media,) = run.glob(f"files/media/table/{tracking.TABLE}_*.table.json")
    table = json.loads(media.read_text())
    assert "fraction_toy-dit-small" in table["columns"] and "fractions" not in table["columns"]
    for k, column in enumerate(table["columns"]):
        cells = [line[k] for line in table["data"] if line[k] is not None]
        want = str if column in ("setting", "timing_flag") else (int, float)
        assert cells and all(isinstance(c, want) and not isinstance(c, bool) for c in cells), column
    staged = next(t for t in staged_tables(tmp_path / "data") if t["columns"] == table["columns"])
    types = staged["column_types"]["params"]["type_map"]
    for column in table["columns"]:
        wb = types[column]
        allowed = {t["wb_type"] for t in wb["params"]["allowed_types"]} if wb["wb_type"] == "union" else {
            wb["wb_type"]}
        assert allowed == ({"none", "string"} if column in ("setting", "timing_flag") else {"none", "number"})
    assert list(run.glob("files/media/images/tradeoff_*.png"))
    uri = (out / "samples.npz").resolve().as_uri().encode()
    for _ in range(60):  # W&B's service may still be writing its transaction log when finish() returns
        log = next(run.glob("*.wandb")).read_bytes()
        if uri in log and b"results.tex" in log:
            break
        time.sleep(0.5)
    assert uri in log  # by reference, not copied
    assert b"results.csv" in log and b"results.tex" in log
    staging = [p.read_bytes() for p in (tmp_path / "data" / "artifacts" / "staging").iterdir()]
    assert (out / "results.csv").read_bytes() in staging and b"\x93" * 5000 not in staging


def test_files_over_the_limit_go_into_an_artifact_by_reference(tmp_path):
    small, large = tmp_path / "results.csv", tmp_path / "samples.npz"
    small.write_text("a,b\n1,2\n")
    large.write_bytes(b"0" * 2048)
    a = tracking.artifact("results", "results-x", [small, large, tmp_path / "missing.json"], copy_limit=1024)
    entries = a.manifest.entries
    assert sorted(entries) == ["results.csv", "samples.npz"] and a.type == "results"
    assert entries["results.csv"].ref is None and entries["samples.npz"].ref == large.resolve().as_uri()
    assert tracking.artifact("samples", "samples-x", [tmp_path / "missing.npz"]) is None
    assert tracking.COPY_LIMIT == 100 * 2**20


def test_rows_written_before_read_back_from_an_older_wandb_table(tmp_path):
    """A table of an older run (lists as JSON text, a members column) still reads."""
    table = tmp_path / "files" / "media" / "table" / "results_0_x.table.json"
    table.parent.mkdir(parents=True)
    table.write_text(json.dumps({"columns": ["members", "fractions", "nfe", "fd"],
                                 "data": [['["a", "b"]', "[0.5, 0.5]", "[2, 2]", 1.5]]}))
    assert tracking.read_offline(tmp_path) == ([{"fractions": [0.5, 0.5], "nfe": [2, 2], "fd": 1.5}], ["a", "b"])
