"""A results row's per-member lists (``fractions``, ``nfe``, the members' footprint: ``tstitch.jobs.footprint``) as
flat columns, one per member, and back: the shape of the CSV and the W&B table (``tstitch.jobs.report``,
``tstitch.jobs.tracking``)."""

# a row's per-member lists -> their flat columns' prefix (a prefix may hold "_": ``unflat`` takes the longest)
LISTS = {"fractions": "fraction", "nfe": "nfe", "params": "params", "encoder_params": "encoder_params",
         "param_bytes": "param_bytes", "storage_bytes": "storage_bytes"}


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
    their order). A list whose columns are all None (or absent) is left out; None inside a list (a member's unknown
storage, say) stays in its place."""
    out, lists, names = {}, {}, []
    prefixes = sorted(((p, k) for k, p in LISTS.items()), key=lambda pk: -len(pk[0]))  # param_bytes before params
    for k, v in row.items():
        prefix, key = next(((p, key) for p, key in prefixes if k.startswith(p + "_") and len(k) > len(p) + 1),
                           (None, None))
        if prefix is not None:
            lists.setdefault(key, []).append(v)
            names += [k[len(prefix) + 1:]] if key == "fractions" else []
        else:
            out[k] = v
    for k, values in lists.items():
        while values and values[-1] is None:  # columns past the list's end (``flat``); None inside a list stays
            values = values[:-1]
        if values:
            out[k] = values
    return {k: out[k] for k in [*LISTS, *out] if k in out}, names
