"""Fast paths, each a switch of the ``fast`` config group, applied to members once after loading (so a compiled
net is reused by every allocation of a sweep). The solver math stays float32 whatever the members run in.

* ``precision``: ``fp32``, or ``bf16`` / ``fp16`` autocast of each member's forward (outputs back to float32) on
  the device its input is on; on CPUs with AMX or AVX512-BF16 bf16 is also the fast path there. Where the device
  has no native support for the requested precision it is slower than fp32 (emulated in oneDNN on a CPU, no tensor
  cores on a GPU), so the run falls back to fp32 with a one-line warning (``choose_precision``) unless ``force``.
* ``force``: run the requested ``precision`` even where it is known to be slower than fp32 on this device.
* ``tf32``: TensorFloat-32 matmuls and convolutions on NVIDIA GPUs (Ampere and later).
* ``compile``: ``torch.compile`` of each member's network (compiled on the first call at each batch shape).
* ``graphs``: CUDA graphs (``torch.compile``'s ``reduce-overhead`` mode, so it implies ``compile``): every step's
  kernels replayed with one launch. Shapes are static here (every batch runs at the full batch size). On a CPU it
  is plain ``compile``.
* ``channels_last``: memory format of convolutional members (UNets), a no-op for transformers.
* ``offload``: members' networks wait in host memory and only the one whose steps are running is on the device,
  so the device holds the largest member, not all of them. Each switch copies a network in (from pinned memory);
  nothing is copied back, as weights do not change. Text encoders stay resident (prompts are encoded once per
  batch). Not with ``graphs``: a CUDA graph keeps the addresses of the weights it was captured with.
* ``tome``, ``deepcache``: ToMe for SD and DeepCache on the Stable Diffusion members they name
  (``tstitch.models.accelerators``); unlike the switches above they change the images (approximations), off by
  default. DeepCache not with ``graphs`` (a graph's next replay overwrites the features it keeps).

Always on, no switch: fused attention (``scaled_dot_product_attention``), conditional and unconditional halves of
guidance in one batched forward, no host sync inside the step loop, members resident on the device (unless
``offload``).
"""
import os
from dataclasses import dataclass

import torch

from tstitch.errors import ConfigError
from tstitch.models import accelerators
from tstitch.models.checks import warn
from tstitch.models.protocols import Output, Wrapped

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# CPU features that run a precision natively (x86 names, then ARM's as torch.cpu.get_capabilities gives them);
# without one, oneDNN emulates it. On an AVX512-BF16 CPU (docs/benchmarks.md), DiT-S/2 pair: bf16 1.69x the fp32
# reference, 0.25x with oneDNN held to AVX2, 0.54x to AVX512_CORE; fp16 without avx512_fp16 or AMX-FP16 0.2x (toy).
NATIVE_CPU = {"bf16": ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"),
              "fp16": ("avx512_fp16", "amx_fp16", "fp16_arith")}
NATIVE_SM = {"bf16": (8, 0), "fp16": (7, 0)}  # bf16 arithmetic from Ampere, fp16 tensor cores from Volta
# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below each precision's native instructions
ONEDNN_BELOW = {"bf16": {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}}
ONEDNN_BELOW["fp16"] = ONEDNN_BELOW["bf16"] | {"AVX512_CORE_BF16", "AVX512_CORE_AMX"}


@dataclass(frozen=True)
class Capability:
    """What a device offers the precisions: ``kind`` (``cpu``, ``cuda``, or another device type, which is not
    judged); on a CPU ``isa`` (torch's kernel level, ``torch.backends.cpu.get_cpu_capability()``: AVX2, AVX512,
    SVE256, ...) and ``flags`` (its native low-precision features, see ``NATIVE_CPU``, less what a oneDNN ISA limit
    ``limit`` rules out); on a GPU ``sm`` (compute capability); ``name``: the CPU's or GPU's name."""
    kind: str
    isa: str = ""
    flags: frozenset = frozenset()
    sm: tuple | None = None
    name: str = ""
    limit: str = ""

    def native(self, precision):
        """Whether ``precision`` runs natively (True for fp32 and for devices not judged)."""
        if precision == "fp32" or self.kind not in ("cpu", "cuda"):
            return True
        if self.kind == "cuda":
            return self.sm is not None and tuple(self.sm) >= NATIVE_SM[precision]
        return bool(self.flags & set(NATIVE_CPU[precision]))

    def __str__(self):
        if self.kind == "cuda":
            return f"{self.name or 'cuda'} (sm_{self.sm[0]}{self.sm[1]})" if self.sm else self.name or "cuda"
        if self.kind != "cpu":
            return self.kind
        flags = f"with {', '.join(sorted(self.flags))}" if self.flags else "without native bf16/fp16"
        limit = f" under ONEDNN_MAX_CPU_ISA={self.limit}" if self.limit else ""
        return f"CPU {self.isa} {flags}{limit}" + (f" ({self.name})" if self.name else "")

    @property
    def short(self):
        """A tag for one result line: ``AVX512+avx512_bf16``, ``AVX2``, ``NVIDIA H100 80GB HBM3 sm_90``."""
        if self.kind == "cuda":
            return f"{self.name} sm_{self.sm[0]}{self.sm[1]}" if self.sm else self.name or "cuda"
        if self.kind != "cpu":
            return self.kind
        return "+".join([self.isa, *sorted(self.flags)]) + (f" oneDNN<={self.limit}" if self.limit else "")


def _cpu_features():
    """The CPU's feature names that are present (``torch.cpu.get_capabilities``, else /proc/cpuinfo's flags)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        caps = get()
        return {k for k, v in caps.items() if v is True}, caps.get("cpu_name", "")
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().replace(":", " ").split())
    except OSError:
        return set(), ""
    return words | ({"fp16_arith"} if "asimdhp" in words else set()), ""


def capability(device="cpu") -> Capability:
    """This machine's ``Capability`` for work on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return Capability("cuda", sm=tuple(torch.cuda.get_device_capability(device)),
                          name=torch.cuda.get_device_name(device))
    if device.type != "cpu":
        return Capability(device.type)
    present, name = _cpu_features()
    flags = present & {f for names in NATIVE_CPU.values() for f in names}
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    for precision, below in ONEDNN_BELOW.items():
        if limit in below:
            flags -= set(NATIVE_CPU[precision][:2])  # the x86 instructions oneDNN is then not allowed to use
    return Capability("cpu", torch.backends.cpu.get_cpu_capability(), frozenset(flags), name=name, limit=limit)


def machine(device="cpu", short=False) -> str:
    """What a timing ran on, for benchmark lines and records: the CPU's capability, and the GPU's before it when
    ``device`` is a CUDA device; ``short``: the tags (``Capability.short``)."""
    show = (lambda c: c.short) if short else str
    cpu = show(capability("cpu"))
    return f"{show(capability(device))} on {cpu}" if torch.device(device).type == "cuda" else cpu


def choose_precision(precision, cap: Capability, force=False) -> tuple[str, str | None]:
    """``(precision to run, warning line or None)`` for a requested ``precision`` on a device of capability
    ``cap``: a ``bf16`` / ``fp16`` that the device runs slower than fp32 (no native support) becomes ``fp32``, with
    one line naming the capability and the fix; ``force`` keeps the request. A pure function of its arguments."""
    if force or cap.native(precision):
        return precision, None
    if cap.kind == "cuda":
        major, minor = NATIVE_SM[precision]
        why = f"{precision} {'arithmetic needs' if precision == 'bf16' else 'tensor cores need'} sm_{major}{minor}"
        fix = f"a GPU of sm_{major}{minor} or later"
    else:
        need = " or ".join(NATIVE_CPU[precision][:2])
        why = f"oneDNN emulates {precision} without {need}"
        fix = f"a CPU with {need}" + (" (or unset ONEDNN_MAX_CPU_ISA)" if cap.limit else "")
    return "fp32", (f"fast.precision={precision} is slower than fp32 on {cap}, as {why}: running fp32; for "
                    f"{precision}'s speed use {fix}, or set fast.force=true to run {precision} anyway")


class Autocast(Wrapped):
    """``member`` run under autocast to ``dtype`` on its input's device; its outputs returned in float32."""

    def __init__(self, member, dtype):
        super().__init__(member)
        self.dtype = dtype

    def __call__(self, x, t, cond):
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.member(x, t, cond)
        return Output(out.eps.float(), None if out.v is None else out.v.float())


class Graphed(Wrapped):
    """``member`` whose network runs as CUDA graphs: each call starts a new graph step, and the outputs are copied
    out of the graphs' memory, which the next replay overwrites."""

    def __call__(self, x, t, cond):
        torch.compiler.cudagraph_mark_step_begin()
        out = self.member(x, t, cond)
        return Output(out.eps.clone(), None if out.v is None else out.v.clone())


class Slot:
    """The one place on the device that offloaded members take turns in."""

    def __init__(self):
        self.resident = None

    def hold(self, member, device):
        if self.resident is not member or member.device_of_weights != device:
            if self.resident is not None:
                self.resident.release()
            member.load(device)
            self.resident = member


class Offloaded(Wrapped):
    """``member`` whose network's weights live in host memory and are copied to the device of the input when it is
    called, taking ``slot`` from the member there before it (whose device copy is dropped)."""

    offloaded = True

    def __init__(self, member, slot):
        super().__init__(member)
        self.slot = slot
        # (module, "_parameters" or "_buffers", name, key): every place a weight sits; tied weights share a key
        self.places, self.host = [], {}
        for module in member.net.modules():
            for kind in ("_parameters", "_buffers"):
                for name, t in getattr(module, kind).items():
                    if t is not None:
                        self.places.append((module, kind, name, id(t)))
                        self.host.setdefault(id(t), t.detach().to("cpu"))
        self.pinned = False
        self.release()

    def _put(self, tensors):
        made = {}
        for module, kind, name, key in self.places:
            if key not in made:
                made[key] = torch.nn.Parameter(tensors[key], requires_grad=False) if kind == "_parameters" \
                    else tensors[key]
            getattr(module, kind)[name] = made[key]

    def load(self, device):
        if device.type == "cuda" and not self.pinned:  # page-locked: asynchronous, full-bandwidth copies
            self.host, self.pinned = {k: h.pin_memory() for k, h in self.host.items()}, True
        self._put({k: h.to(device, non_blocking=True) for k, h in self.host.items()})
        self.device_of_weights = device

    def release(self):
        self._put(self.host)
        self.device_of_weights = torch.device("cpu")

    def __call__(self, x, t, cond):
        self.slot.hold(self, x.device)
        return self.member(x, t, cond)


def speed_up(members, device="cpu", precision="fp32", tf32=True, compile=False, graphs=False, channels_last=False,
             offload=False, force=False, tome=None, deepcache=None, names=None):
    """The members with the configured fast paths (see the module docstring). ``device``: where the members run
    (whose capability decides ``precision``) and where text encoders go when ``offload`` is on (networks follow
    their inputs). ``tome``, ``deepcache``: their options (``tstitch.models.accelerators``; None: off); ``names``:
    the members' stitch keys, which their ``members`` may name (default: the zoo names)."""
    if precision not in DTYPES:
        raise ConfigError(f"fast.precision must be one of {sorted(DTYPES)}, not {precision!r}")
    if members:
        precision, line = choose_precision(precision, capability(device), force)
        if line:
            warn(line)
    if offload and graphs:
        raise ConfigError("fast.offload and fast.graphs cannot be combined: a CUDA graph keeps the addresses of "
                          "the weights it was captured with; set fast.graphs=false to offload, or fast.offload=false")
    keys = names if names is not None else [m.name for m in members]
    chosen = accelerators.check({"tome": tome, "deepcache": deepcache, "graphs": graphs},
                                [(k, m.name, getattr(m, "family", "custom")) for k, m in zip(keys, members)])
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)  # process-wide; only NVIDIA GPUs read them
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    for m in members:
        if channels_last:
            m.net = m.net.to(memory_format=torch.channels_last)
        if compile or graphs:  # compiled lazily, on the first call: after the accelerators' patches
            m.net = torch.compile(m.net, dynamic=False, mode="reduce-overhead" if graphs else None)
    slot, out = Slot(), []
    for m in accelerators.apply(members, chosen):
        if offload:
            if m.encoder is not None:
                m.encoder.to(device)
            m = Offloaded(m, slot)
        if graphs:
            m = Graphed(m)
        out.append(Autocast(m, DTYPES[precision]) if DTYPES[precision] else m)
    return out
