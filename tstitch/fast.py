"""Fast paths, each a switch of the ``fast`` config group, applied to members once after loading (so a compiled
net is reused by every allocation of a sweep). The solver math stays float32 whatever the members run in.

* ``precision``: ``fp32``, or ``bf16`` / ``fp16`` autocast of each member's forward (outputs back to float32) on
  the device its input is on; on CPUs with AMX or AVX512-BF16 bf16 is also the fast path there.
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

Always on, no switch: fused attention (``scaled_dot_product_attention``), conditional and unconditional halves of
guidance in one batched forward, no host sync inside the step loop, members resident on the device (unless
``offload``).
"""
import torch

from tstitch.errors import ConfigError
from tstitch.protocols import Output, Wrapped

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
             offload=False):
    """The members with the configured fast paths (see the module docstring). ``device``: where text encoders go
    when ``offload`` is on (networks follow their inputs)."""
    if precision not in DTYPES:
        raise ConfigError(f"fast.precision must be one of {sorted(DTYPES)}, not {precision!r}")
    if offload and graphs:
        raise ConfigError("fast.offload and fast.graphs cannot be combined: a CUDA graph keeps the addresses of "
                          "the weights it was captured with; set fast.graphs=false to offload, or fast.offload=false")
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)  # process-wide; only NVIDIA GPUs read them
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    slot, out = Slot(), []
    for m in members:
        if channels_last:
            m.net = m.net.to(memory_format=torch.channels_last)
        if compile or graphs:
            m.net = torch.compile(m.net, dynamic=False, mode="reduce-overhead" if graphs else None)
        if offload:
            if m.encoder is not None:
                m.encoder.to(device)
            m = Offloaded(m, slot)
        if graphs:
            m = Graphed(m)
        out.append(Autocast(m, DTYPES[precision]) if DTYPES[precision] else m)
    return out
