"""Counting FLOPs and measuring the device's peak.

`torch.utils.flop_counter.FlopCounterMode` counts matmul-like ops. On CPU, SDPA runs
`aten._scaled_dot_product_flash_attention_for_cpu` (+ `_backward`), which torch gives no formula,
so attention would count as 0: we register torch's own SDPA formulas for them here.
"""
from __future__ import annotations

import time
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import torch
from torch.utils.flop_counter import (FlopCounterMode, flop_registry, register_flop_formula,
                                      sdpa_backward_flop_count, sdpa_flop_count)

if TYPE_CHECKING:
    import pandas as pd

_aten = torch.ops.aten


def _register_cpu_sdpa() -> None:
    fwd = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in flop_registry:
        @register_flop_formula(fwd)
        def _cpu_flash_fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)

    if bwd is not None and bwd not in flop_registry:
        @register_flop_formula(bwd)
        def _cpu_flash_bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_sdpa()


def _fix_grouped_conv_backward() -> None:
    """torch's `conv_backward_flop` ignores `groups` in the weight-gradient branch (it counts a grouped
    convolution's weight gradient `groups` times over). Each backward branch of a convolution does the
    forward's multiply-adds once: grad_input is the transposed convolution with the same weight, and
    grad_weight pairs every output gradient with the same input windows. So a grouped backward counts
    forward × (branches asked for); ungrouped convolutions keep torch's own formula."""
    from torch.utils.flop_counter import conv_backward_flop, conv_flop_count, shape_wrapper

    key = _aten.convolution_backward
    if key not in flop_registry or getattr(flop_registry[key], "_effitrain_grouped", False):
        return
    original = getattr(conv_backward_flop, "__wrapped__", conv_backward_flop)  # the formula on shapes

    def formula(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding,
                groups, output_mask, out_shape=None, **kwargs) -> int:
        if groups == 1:
            return original(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                            output_padding, groups, output_mask, out_shape=out_shape, **kwargs)
        fwd = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
        return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))

    wrapped = shape_wrapper(formula)
    wrapped._effitrain_grouped = True
    flop_registry[key] = wrapped


_fix_grouped_conv_backward()


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything `fn` runs (forward and backward if it calls backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer reads the real time."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@lru_cache(maxsize=8)
def measure_peak_flops(device_type: str = "cpu", dtype: str = "fp32", size: int = 0, repeats: int = 5) -> float:
    """Achievable matmul FLOP/s of a device: the best of several repeats of a large square matmul.

    This is the denominator of MFU: "what fraction of what this machine can do with a matmul did
    training reach". Measured, not looked up in a spec sheet.
    """
    device = torch.device(device_type)
    n = size or (8192 if device.type == "cuda" else 2048)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    inner = 20 if device.type == "cuda" else 3
    for _ in range(2):
        a @ b
    sync(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        rates.append(2 * n**3 * inner / (time.perf_counter() - t0))
    return max(rates)  # a peak: other load on the machine only ever makes a repeat slower


def flops_breakdown(run) -> "pd.DataFrame":
    """Where a run's FLOPs went: the analytic terms (blocks 6·N·D, attention, sparse MLM head), their
    sum, and what `FlopCounterMode` measured, as FLOPs and as a share of the analytic total.

    Needs a run trained by this version of the trainer (it records the terms in
    `run.extra["flops_analytic_parts"]`); an older saved run raises a one-line ValueError.
    """
    import pandas as pd

    parts = run.extra.get("flops_analytic_parts")
    if not parts:
        raise ValueError(f"run {run.label!r} has no recorded FLOP terms (run.extra['flops_analytic_parts']); "
                         "train it again with this version of effitrain")
    s = run.summary()
    total = sum(parts.values())
    rows = {"blocks: 6·N·tokens": parts["blocks"], "attention: scores and mixing": parts["attention"],
            "MLM head (masked positions only)": parts["head"], "analytic total": total,
            "measured (FlopCounterMode)": s["flops_measured"]}
    df = pd.DataFrame({"FLOPs": rows, "per step": {k: v / max(1, s["steps"]) for k, v in rows.items()},
                       "share of analytic": {k: v / total if total else float("nan") for k, v in rows.items()}})
    df.index.name = run.label
    return df
