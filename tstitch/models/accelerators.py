"""Training-free accelerators of Stable Diffusion UNets on top of stitching (the paper's Figs. 19-22), each a switch
of the ``fast`` group acting on the stitch members it names (``members``: stitch keys, zoo names or positions):

* ``tome``: Token Merging for SD (Bolya & Hoffman, 2023, "Token Merging for Fast Stable Diffusion"), by the
  ``tomesd`` package unchanged (``tomesd.apply_patch`` on the member's UNet): ``ratio`` of the tokens merged before
  the self-attention of every transformer block at most ``max_downsample`` times below full resolution. Its
  random choice of merge destinations (tomesd's ``use_rand``) is drawn from a generator seeded with ``TOME_SEED`` at
  the start of each trajectory, so a seed's image does not depend on what ran before (tomesd forks the global RNG).
  The draw is shared by the batch; like tomesd, an odd batch (no guidance, odd ``batch_size``) draws none.
* ``deepcache``: DeepCache (Ma et al., 2024, "DeepCache: Accelerating Diffusion Models for Free"), uniform: the
  member's UNet runs whole on every ``interval``-th call of that member in a trajectory (the first included), and
  on the calls between it runs only its shallow branch, conv_in and conv_out with the skip branch ``branch``
  (DeepCache's ``cache_branch_id``: down block ``branch // 3``, layer ``branch % 3``), the deeper modules returning
  what they computed on the last whole call. Written here per member, as the ``DeepCache`` package's helper patches
  a pipeline and counts the pipeline's steps (by its scheduler's timesteps, a host sync per call); which modules a
  cached call skips is that helper's rule, and ``tests/test_fast_sd.py`` checks every call equal to it.

Both act per trajectory: their state (DeepCache's cached features and call count, ToMe's generator) starts afresh
when the member is conditioned (``tstitch.sample`` conditions each member once per batch, before the first step) and
when it is called at a higher timestep than its last call (a new trajectory on a condition made earlier), so nothing
carries over between batches, allocations or members (each member has its own). They patch the member's UNet in
place (as ``fast.compile`` replaces its network).
"""
import functools

import torch

from tstitch.config import DeepCacheConfig, TomeConfig
from tstitch.errors import ConfigError
from tstitch.models.protocols import Wrapped
from tstitch.rules import Section, show

TOME_SEED = 0  # the generator of ToMe's merge destinations, seeded afresh for each trajectory
DEFAULTS = {"tome": {"ratio": 0.0, "max_downsample": 1, "members": [-1]},
            "deepcache": {"interval": 1, "branch": 0, "members": [-1]}}
SCHEMAS = {"tome": TomeConfig, "deepcache": DeepCacheConfig}
LABELS = {"tome": "ToMe for SD", "deepcache": "DeepCache"}
OFF = {"tome": "fast.tome.ratio=0", "deepcache": "fast.deepcache.interval=1"}


def options(switch, given):
    """A switch's options (``tome`` or ``deepcache``): ``given`` (a dict or config section, None for off) over the
    defaults, checked by the house rules of its structured config (``tstitch.config``)."""
    given = dict(given or {})
    Section(SCHEMAS[switch])(given, f"fast.{switch}")
    return {**DEFAULTS[switch], **given}


def on(switch, opts):
    return opts["ratio"] > 0 if switch == "tome" else opts["interval"] > 1


def recorded(fast):
    """The ``fast`` section (a dict) as a run's identity records it: a switch that is off is left out, so sample
    sets made before these switches existed resume, and an off switch's other options change nothing."""
    return {k: v for k, v in (fast or {}).items() if k not in SCHEMAS or on(k, options(k, v))}


def select(switch, opts, entries):
    """Indices of the members a switch acts on. ``entries``: ``(stitch key, zoo name, family)`` per member; a
    ``members`` item is a stitch key, a zoo name or a position (negative from the end). Every one must be a Stable
    Diffusion member; otherwise one ``ConfigError`` line naming the fix."""
    if not on(switch, opts) or not entries:
        return []
    n, key = len(entries), f"fast.{switch}.members"
    known = ", ".join(k if k == name else f"{k} ({name})" for k, name, _ in entries)
    out = []
    for item in opts["members"]:
        if isinstance(item, int) and not isinstance(item, bool) and -n <= item < n:
            out.append(item % n)
            continue
        hits = [i for i, (k, name, _) in enumerate(entries) if item in (k, name)] if isinstance(item, str) else []
        if not hits:
            raise ConfigError(f"{key}={show(opts['members'])}: {item!r} is no member of this stitch; name members by "
                              f"stitch key or zoo name ({known}) or position (0 ... {n - 1}, -1: the last)")
        out.append(hits[0])
    for i in dict.fromkeys(out):
        k, name, family = entries[i]
        if family != "sd":
            raise ConfigError(f"{key}: {k} ({name}) is a {family} model, but {LABELS[switch]} acts on Stable "
                              f"Diffusion UNets; set {key} to sd members only (e.g. [large]), or {OFF[switch]}")
    return list(dict.fromkeys(out))


def check(fast, entries):
    """The ``fast`` section's accelerators against the members (``select``'s ``entries``), before anything loads:
    options, members, and DeepCache with CUDA graphs (refused: a graph's outputs are overwritten by its next replay,
    and DeepCache keeps them). Returns ``{switch: (options, member indices)}``."""
    fast = fast or {}
    chosen = {s: (o, select(s, o, entries)) for s in SCHEMAS for o in [options(s, fast.get(s))]}
    if chosen["deepcache"][1] and fast.get("graphs"):
        raise ConfigError("fast.deepcache and fast.graphs cannot be combined: a CUDA graph's outputs are overwritten "
                          "by its next replay, and DeepCache keeps them for the calls between; set fast.graphs=false, "
                          "or fast.deepcache.interval=1")
    return chosen


def unet_of(member):
    """The ``UNet2DConditionModel`` a member runs per step (under ``torch.compile`` and a ControlNet's wrapper)."""
    from diffusers import UNet2DConditionModel

    net = getattr(member.net, "_orig_mod", member.net)  # torch.compile's module
    net = getattr(net, "unet", net)  # a UNet with a ControlNet (adapters._control.Controlled)
    if not isinstance(net, UNet2DConditionModel):
        raise ConfigError(f"{member.name} runs a {type(net).__name__}, not a UNet2DConditionModel: ToMe for SD and "
                          "DeepCache act on Stable Diffusion UNets; leave it out of fast.tome.members and "
                          "fast.deepcache.members")
    return net


def apply(members, chosen):
    """``members`` with the accelerators ``chosen`` for them (``check``'s answer) applied."""
    out = []
    for i, m in enumerate(members):
        tome, deepcache = (o if i in idx else None for o, idx in (chosen["tome"], chosen["deepcache"]))
        if tome:
            m = TokenMerged(m, tome["ratio"], tome["max_downsample"])
        if deepcache:
            m = DeepCached(m, deepcache["interval"], deepcache["branch"])
        out.append(m)
    return out


class PerTrajectory(Wrapped):
    """A member with state per sampling trajectory: ``start`` runs when it is conditioned and when it is called at
    a higher timestep than its last call (see the module docstring)."""

    def __init__(self, member):
        super().__init__(member)
        self.last = None
        self.start()

    def start(self):
        raise NotImplementedError

    def condition(self, labels):
        self.start()
        self.last = None
        return self.member.condition(labels)

    def _begin(self, t):
        if self.last is not None and t > self.last:
            self.start()
        self.last = t


class TokenMerged(PerTrajectory):
    """``member`` whose UNet merges tokens (tomesd, ``ratio``, ``max_downsample``), its draws per trajectory."""

    def __init__(self, member, ratio, max_downsample=1):
        import tomesd

        self.unet = unet_of(member)
        tomesd.apply_patch(self.unet, ratio=ratio, max_downsample=max_downsample)  # replaces an earlier patch
        self.args = self.unet._tome_info["args"]
        super().__init__(member)

    def start(self):
        self.fresh = True

    def __call__(self, x, t, cond):
        self._begin(t)
        if self.fresh:  # on the input's device, where tomesd draws
            self.args["generator"] = torch.Generator(device=x.device).manual_seed(TOME_SEED)
            self.fresh = False
        return self.member(x, t, cond)


class DeepCached(PerTrajectory):
    """``member`` whose UNet runs whole on every ``interval``-th call of a trajectory and only its shallow branch
    ``branch`` on the calls between (DeepCache, uniform). A batch of another shape runs whole."""

    def __init__(self, member, interval, branch=0):
        self.cache = FeatureCache(unet_of(member), branch, member.name)
        self.interval = interval
        super().__init__(member)

    def start(self):
        self.calls = 0
        self.cache.clear()

    def __call__(self, x, t, cond):
        self._begin(t)
        if self.cache.shape != x.shape:
            self.calls = 0
        self.cache.full = self.calls % self.interval == 0
        self.cache.shape = x.shape if self.cache.full else self.cache.shape
        self.calls += 1
        return self.member(x, t, cond)


def deep_modules(unet, branch):
    """The modules whose outputs a cached call reuses, for DeepCache's skip branch ``branch`` (down block b =
    ``branch // 3``, layer l = ``branch % 3``; up blocks counted from the last, mirroring the down blocks, and their
    layers from the last): the down blocks after b, block b's layers from l on (the whole block for l = 0, its
    downsampler unless it has fewer than l layers), the mid block, the up blocks mirroring those after b, and the
    layers of b's mirror before its last l + 1. The outermost module of each part: its inner ones are not called."""
    block, layer = divmod(branch, 3)
    out = []
    for i, down in enumerate(unet.down_blocks):
        if i > block or (i == block and layer == 0):
            out.append(down)
        elif i == block:
            out += [m for part in ("resnets", "attentions") for k, m in enumerate(getattr(down, part, None) or [])
                    if k >= layer]
            out += list(down.downsamplers or []) if len(down.resnets) >= layer else []
    if unet.mid_block is not None:
        out.append(unet.mid_block)
    for i, up in enumerate(unet.up_blocks):
        mirror, n = len(unet.up_blocks) - 1 - i, len(up.resnets)
        if mirror > block:
            out.append(up)
        elif mirror == block:
            out += [m for part in ("resnets", "attentions") for k, m in enumerate(getattr(up, part, None) or [])
                    if n - 1 - k > layer]
    return out


class FeatureCache:
    """The deep modules of a UNet (``deep_modules``), patched: on a ``full`` call each runs and keeps its output, on
    a cached call each returns the output it kept. ``shape``: the batch shape of the kept outputs."""

    def __init__(self, unet, branch, name):
        if branch >= 3 * len(unet.down_blocks):
            raise ConfigError(f"fast.deepcache.branch={branch} is beyond {name}'s UNet: its {len(unet.down_blocks)} "
                              f"down blocks have branches 0 ... {3 * len(unet.down_blocks) - 1} (0: the shallowest, "
                              "DeepCache's default)")
        previous = getattr(unet, "_deepcache", None)
        if previous is not None:
            previous.remove()
        unet._deepcache = self
        self.full, self.kept, self.shape = True, {}, None
        self.modules = deep_modules(unet, branch)
        self.own = [module.__dict__.get("forward") for module in self.modules]  # a forward set on the instance
        for i, module in enumerate(self.modules):
            module.forward = functools.partial(self._forward, i, module.forward)

    def _forward(self, i, forward, *args, **kwargs):
        if self.full:
            self.kept[i] = forward(*args, **kwargs)
        return self.kept[i]

    def clear(self):
        self.kept, self.shape = {}, None

    def remove(self):
        """The modules' own forwards back."""
        for module, own in zip(self.modules, self.own):
            if own is None:
                del module.forward
            else:
                module.forward = own
        self.clear()
