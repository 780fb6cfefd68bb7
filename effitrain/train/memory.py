"""Peak memory of a run: CUDA's peak allocated bytes, or on CPU the growth of the process's peak RSS."""
from __future__ import annotations

import resource
import sys

import torch


def max_rss_bytes() -> int:
    """The process's peak resident set size so far, in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Started when the run's setup starts; `read()` gives `peak_memory_bytes` and what it measured.

    CPU: how far the process's peak resident set grew during the run (0 when an earlier run in the
    same process had already reached a higher peak: RSS peaks cannot be reset).
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
        else:
            self.start = max_rss_bytes()

    def read(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                    "peak_memory_kind": "cuda max allocated"}
        return {"peak_memory_bytes": max(0, max_rss_bytes() - self.start), "peak_memory_kind": "cpu peak RSS growth"}
