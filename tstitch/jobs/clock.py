"""Timing on any device: ``sync`` waits for queued GPU work so that a host clock measures it, and ``Clock`` sums the
seconds of each member of a stitched run, read only where the member in use changes (no host sync per step)."""
import time

import torch


def sync(device):
    """Wait for queued GPU work on ``device``."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


class Clock:
    """Seconds per member over stitched sampling. The clock is read (after a device sync) only when the member
    in use changes and at ``stop()``: no host sync inside a member's run of steps."""

    def __init__(self, n, device):
        self.seconds, self.device = [0.0] * n, device
        self.current = self.start = None

    def enter(self, k):
        if k != self.current:
            self.stop()
            self.current, self.start = k, time.perf_counter()

    def stop(self):
        if self.current is not None:
            sync(self.device)
            self.seconds[self.current] += time.perf_counter() - self.start
            self.current = None
