"""A results row's per-member lists (``fractions``, ``nfe``) as flat columns, one per member, and back: the shape
of the CSV and the W&B table (``tstitch.jobs.report``, ``tstitch.jobs.tracking``)."""

LISTS = {"fractions": "fraction", "nfe": "nfe"}  # a row's per-member lists -> their flat columns' prefix


def member_names(members, rows):
    """The names of the flat per-member columns: ``members``, ``member<k>`` beyond them (rows with more fractions),
    ``<name>#<k>`` where two members have the same name."""
    n = max([len(members or [])] + [len(r.get("fractions") or []) for r in rows])
    names = [*(members or [])[:n], *(f"member{k}" for k in range(len(members or []), n))]
    return [f"{m}#{k}" if names.count(m) > 1 else m for k, m in enumerate(names)]


def flat(row, names):
    """``row`` with its lists as one column per member (CSV and W&B): ``fraction_<name>``, ``nfe_<name>``, in the
    lists' place; a member a list does not reach is None."""
    out = {}
    for k, v in row.items():
        if k in LISTS and isinstance(v, list):
            out.update({f"{LISTS[k]}_{m}": v[i] if i < len(v) else None for i, m in enumerate(names)})
        else:
            out[k] = v
    return out


def unflat(row):
    """The inverse of ``flat``: (the row with its lists back, the members' names from its ``fraction_`` columns, in
    their order). A list whose columns are all None (or absent) is left out."""
    out, lists, names = {}, {}, []
    prefixes = {p: k for k, p in LISTS.items()}
    for k, v in row.items():
        prefix, _, name = k.partition("_")
        if prefix in prefixes and name:
            lists.setdefault(prefixes[prefix], []).append(v)
            names += [name] if prefix == LISTS["fractions"] else []
        else:
            out[k] = v
    for k, values in lists.items():
        values = [v for v in values if v is not None]
        if values:
            out[k] = values
    return {k: out[k] for k in [*LISTS, *out] if k in out}, names
