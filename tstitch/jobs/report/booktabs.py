"""results.tex: the table as a booktabs ``tabular`` for a paper."""
from tstitch.jobs.columns import LISTS, member_names
from tstitch.jobs.report.cells import fmt, interval, time_unit
from tstitch.jobs.report.keys import TIMES, shown, spread_label, spread_shown

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text):
    """``text`` with LaTeX's special characters escaped (``_``, ``%``, ``&``, ...), for a member's name, say."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def latex(rows, members, paper_label=None):
    """The table as a booktabs ``tabular`` for a paper (``\\input{results.tex}`` in a ``table``; needs
    ``\\usepackage{booktabs}``): a column per member for the fractions and for the NFE (grouped under one header
    each), then the columns of ``markdown`` (times in one unit per column, named in the header), each value with
    its interval in brackets (quartiles of the timing rounds, the FD/FID bootstrap's p5-p95)."""
    names = member_names(members, rows)
    paper = [(k, h) for k, h in shown(rows, paper_label) if k == "paper" or k.startswith("paper_")]
    cols = [(k, h) for k, h in shown(rows, paper_label) if k != "timing_flag" and (k, h) not in paper]
    cols += paper  # the paper's columns last
    units = {k: time_unit([r.get(k) for r in rows]) for k in TIMES}
    head, groups, spec = [], [], []
    for k, h in cols:
        if k in LISTS:
            groups.append((len(head) + 1, len(head) + len(names), "fraction of steps" if k == "fractions" else h))
            head += [tex(m) for m in names]
            spec += ["r"] * len(names)
            continue
        label = h.replace("s/image", f"{units[k]}/image") if k in TIMES else h
        head.append(tex(label) + (f" ({spread_label(k)})" if spread_shown(k, rows) else ""))
        spec.append("l" if k == "setting" else "r")

    def cells(r):
        out = []
        for k, _ in cols:
            if k in LISTS:
                values = (r.get(k) or [])[:len(names)]
                out += [f"{v:g}" for v in values] + ["--"] * (len(names) - len(values))
                continue
            value, ends = r.get(k), interval(k, r, units.get(k))
            if value is None:
                out.append("--")
                continue
            text = tex(fmt(k, value, units.get(k)))
            if k in TIMES:  # the unit is in the header
                text = text.removesuffix(f" {units[k]}")
            elif k == "speedup":
                text = text.removesuffix("x") + r"$\times$"
            out.append(text + (f" ({tex(ends[0])}--{tex(ends[1])})" if ends else ""))
        return out

    lines = [f"% T-Stitch {' : '.join(names)}, written by tstitch (tstitch.jobs.report.latex)",
             "\\begin{tabular}{" + "".join(spec) + "}", "\\toprule"]
    if groups:
        top = []
        for k in range(1, len(head) + 1):
            g = next((g for g in groups if g[0] == k), None)
            if g is not None:
                top.append(f"\\multicolumn{{{g[1] - g[0] + 1}}}{{c}}{{{tex(g[2])}}}")
            elif not any(g[0] <= k <= g[1] for g in groups):
                top.append("")
        lines.append(" & ".join(top) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for a, b, _ in groups))
    lines += [" & ".join(head) + " \\\\", "\\midrule"]
    lines += [" & ".join(cells(r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
