"""Fast paths, each a switch of the ``fast`` config group, applied to members once after loading (so a compiled
net is reused by every allocation of a sweep). The solver math stays float32 whatever the members run in.

* ``precision``: ``fp32``, or ``bf16`` / ``fp16`` autocast of each member's forward (outputs back to float32);
  on CPUs with AMX or AVX512-BF16 bf16 is also the fast path there.
* ``tf32``: TensorFloat-32 matmuls and convolutions on NVIDIA GPUs (Ampere and later).
* ``compile``: ``torch.compile`` of each member's network (compiled on the first call at each batch shape).
* ``channels_last``: memory format of convolutional members (UNets), a no-op for transformers.

Always on, no switch: fused attention (``scaled_dot_product_attention``), conditional and unconditional halves of
guidance in one batched forward, no host sync inside the step loop, members resident on the device.
"""
import torch

from tstitch.errors import ConfigError
from tstitch.protocols import Output, Wrapped

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Autocast(Wrapped):
    """``member`` run under autocast to ``dtype`` on ``device_type``; its outputs returned in float32."""

    def __init__(self, member, dtype, device_type):
        super().__init__(member)
        self.dtype, self.device_type = dtype, device_type

    def __call__(self, x, t, cond):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.member(x, t, cond)
        return Output(out.eps.float(), None if out.v is None else out.v.float())


def speed_up(members, device="cpu", precision="fp32", tf32=True, compile=False, channels_last=False):
    """The members with the configured fast paths (see the module docstring)."""
    if precision not in DTYPES:
        raise ConfigError(f"fast.precision must be one of {sorted(DTYPES)}, not {precision!r}")
    device_type = torch.device(device).type
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.allow_tf32 = bool(tf32)
    out = []
    for m in members:
        if channels_last:
            m.net = m.net.to(memory_format=torch.channels_last)
        if compile:
            m.net = torch.compile(m.net, dynamic=False)
        out.append(Autocast(m, DTYPES[precision], device_type) if DTYPES[precision] else m)
    return out
