"""The paper's values beside ours, from an experiment's ``paper`` block: ``values`` (of the block's ``metric``) as
the ``paper`` column, and any other list of a curve, named by the key of one of our columns (``precision``,
``recall``, ``isc``, ``s_per_image``, a footprint key such as ``params_m``, or ``s_per_8_images``, the paper's DiT
timing: ``keys.paper_keys``), as ``paper_<key>``, labelled "paper <our label>"; in results.md a ``paper_<key>``
column shows where we have that key too, the footprint's ones in footprint.md."""


def lookup(config, dotted):
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def add_paper(rows, config):
    """Put the paper's values beside each row from the run config's ``paper`` block: of the first curve whose
    ``match`` (dotted config keys) fits the run, at the row's fraction of the first member, ``values`` (the block's
    ``metric``) as ``row["paper"]`` and each other list of the curve (``paper_keys``; null where the paper has no
    value) as ``row["paper_<key>"]``. Returns the ``paper`` column's label, or None when the config has no paper
    block."""
    paper = (config or {}).get("paper")
    if not paper:
        return None
    curve = next((c for c in paper["curves"] if all(lookup(config, k) == v for k, v in c.get("match", {}).items())),
                 None)
    lists = {k: v for k, v in (curve or {}).items() if k not in ("match", "first")}
    for r in rows:
        for key, values in lists.items():
            value = next((v for f, v in zip(curve["first"], values) if abs(f - r["fractions"][0]) < 1e-6), None)
            if value is None:
                continue
            if key == "values":
                r["paper"], r["paper_metric"] = value, paper["metric"]
            else:
                r[f"paper_{key}"] = value
    return paper.get("label", "paper")
