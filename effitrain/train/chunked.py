"""Chunk-based accumulation: why a low-precision running sum loses small addends, and the fix.

    s = naive_sum(x, torch.bfloat16)           # sequential, the running sum rounded to bf16 after every add
    s = chunked_sum(x, torch.bfloat16, 64)     # sums of 64 in bf16, then the sum of those sums in bf16
    dot_error_curve(kind="same-sign")          # relative error vs length: naive vs chunked (a DataFrame)
    buf = AccumulationBuffer(params, torch.bfloat16, mode="chunked", chunk=8)   # gradient accumulation
    accumulation_error()                       # relative L2 error of accumulated gradients vs n micro-batches

The math in one paragraph. A float with p significand bits (bf16: p = 8, fp16: p = 11, fp32:
p = 24) spaces its values ulp(s) = 2^(e - p + 1) apart around s = 1.m · 2^e, i.e. about
|s| · 2^(1-p). Round-to-nearest makes ``s + a`` come back as ``s`` whenever |a| < ulp(s) / 2: the
addend is *swamped*. A running sum of n addends of typical size |a| grows to about n·|a| (same
sign), so once n·|a| · 2^(1-p) > 2|a|, i.e. after about 2^p terms (256 in bf16, 2048 in fp16),
every further addend is lost or rounded by a relative amount comparable to itself, and the sum
stalls. Chunking (Wang et al. 2018) sums C consecutive terms in the low-precision format (a
partial sum reaches only C·|a|, far from swamping its addends) and then the n/C chunk sums, which
are C times larger than the original addends, in a second pass: the largest ratio of running sum
to addend anywhere drops from n to max(C, n/C), so the error bound goes from ~n·u to
~(C + n/C)·u (u = 2^-p), the same effect Sakr et al. 2019 quantify as the accumulation
bit-width a sum of length n needs.

The emulation is honest: every value that is "stored in dtype" is rounded to dtype, and each
addition of two dtype values is computed in fp32 and rounded once to dtype. For bf16 and fp16
that equals a correctly rounded dtype addition (fp32 has 24 ≥ 2p + 2 bits, so the double rounding
is innocuous), whatever the device. `torch.sum` is never used for the low-precision sums: it
accumulates in fp32 internally (and in a blocked order), which is exactly what is being studied.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch

__all__ = ["naive_sum", "chunked_sum", "dot_error_curve", "AccumulationBuffer", "accumulation_error", "MODES",
           "KINDS"]

MODES = ("naive", "chunked")
KINDS = ("same-sign", "zero-mean")


def _check_dtype(dtype: torch.dtype, where: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{where} must be a floating torch dtype (torch.bfloat16, torch.float16, torch.float32, "
                         f"torch.float64); got {dtype!r}")
    return dtype


def _check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1; got {chunk!r}")
    return chunk


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The format one addition is computed in before it is rounded to `dtype` (fp32, or fp64 for fp64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _add_round(acc: torch.Tensor, addend: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """round_dtype(acc + addend): both already hold dtype values; the sum is computed wider, rounded once."""
    work = _work_dtype(dtype)
    return (acc.to(work) + addend.to(work)).to(dtype)


def naive_sum(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sequential sum over the last dim with the running sum stored in `dtype` after every addition.

    x: (..., n); returns (...) in `dtype`. The addends are rounded to `dtype` first (stored in it), then
    ``acc = round_dtype(acc + x_i)`` for i = 0 … n-1: one Python loop over n, vectorised over the
    leading dims (every leading index is an independent sum). Once |x_i| < ulp(acc)/2 the addend is
    lost entirely (see the module docstring).
    """
    _check_dtype(dtype)
    if x.dim() == 0:
        raise ValueError("x must have at least one dim (the one summed over); got a scalar")
    work = _work_dtype(dtype)
    terms = x.to(dtype).to(work).movedim(-1, 0).contiguous()  # (n, ...): each step reads one contiguous slice
    acc = torch.zeros(x.shape[:-1], dtype=work, device=x.device)  # holds dtype values, kept in `work` between adds
    for i in range(terms.shape[0]):
        acc = (acc + terms[i]).to(dtype).to(work)  # the add, computed in fp32, rounded to dtype
    return acc.to(dtype)


def chunked_sum(x: torch.Tensor, dtype: torch.dtype, chunk: int = 64) -> torch.Tensor:
    """Two-level sum over the last dim: chunks of `chunk` consecutive terms, each summed sequentially
    in `dtype` (as `naive_sum`), then the chunk sums summed sequentially in `dtype`.

    x: (..., n), zero-padded at the end to a multiple of `chunk` (adding 0 changes no sum); returns
    (...) in `dtype`. Vectorised across chunks: reshaped to (..., n_chunks, chunk), one loop over the
    `chunk` positions, then one loop over the n_chunks chunk sums. The running sum is at most
    max(chunk, n/chunk) times an addend instead of n times, so far fewer addends fall below half its ulp.
    """
    _check_dtype(dtype)
    _check_chunk(chunk)
    if x.dim() == 0:
        raise ValueError("x must have at least one dim (the one summed over); got a scalar")
    n = x.shape[-1]
    pad = (-n) % chunk
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], pad)], dim=-1)
    blocks = x.reshape(*x.shape[:-1], (n + pad) // chunk, chunk)  # (..., n_chunks, chunk)
    partial = naive_sum(blocks, dtype)  # (..., n_chunks): every chunk's sum in dtype, all chunks at once
    return naive_sum(partial, dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def dot_error_curve(lengths: Sequence[int] = (256, 1024, 4096, 16384, 65536), dtype: torch.dtype = torch.bfloat16,
                    chunk: int = 64, kind: str = "same-sign", trials: int = 8, seed: int = 0) -> pd.DataFrame:
    """Relative error |s - ref| / |ref| of a low-precision dot product, naive vs chunked, per length.

    Per trial, two random vectors of the length are drawn in fp64 from an own generator (seeded:
    deterministic) and stored in `dtype`: ``"same-sign"`` both uniform in [0, 1) (the sum grows
    linearly, the worst case for swamping), ``"zero-mean"`` both standard normal (the sum grows like
    √n, a random walk, so far less is lost). The products are formed in `dtype` (each rounded once)
    and summed by `naive_sum` and by `chunked_sum`. ref = the fp64 sum of the fp64 products of the
    stored vectors, so the error is that of forming the products and accumulating them in `dtype`.
    Returns columns length, kind, dtype, naive, chunked (the mean relative error over `trials`).
    """
    _check_dtype(dtype)
    _check_chunk(chunk)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    lengths = [int(n) for n in lengths]
    if not lengths or any(n < 1 for n in lengths):
        raise ValueError(f"lengths must be positive integers; got {lengths!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1; got {trials!r}")
    gen = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    # every (length, trial) pair is one row, zero-padded at the end to the longest length: one loop for all
    products = torch.zeros(len(lengths) * trials, longest, dtype=dtype)
    refs = torch.zeros(len(lengths) * trials, dtype=torch.float64)
    for li, n in enumerate(lengths):
        for t in range(trials):
            if kind == "same-sign":
                a, b = torch.rand(2, n, generator=gen, dtype=torch.float64)
            else:
                a, b = torch.randn(2, n, generator=gen, dtype=torch.float64)
            a, b = a.to(dtype), b.to(dtype)
            row = li * trials + t
            products[row, :n] = (a.to(_work_dtype(dtype)) * b.to(_work_dtype(dtype))).to(dtype)
            refs[row] = (a.double() * b.double()).sum()
    naive = ((naive_sum(products, dtype).double() - refs).abs() / refs.abs()).view(len(lengths), trials)
    chunked = ((chunked_sum(products, dtype, chunk).double() - refs).abs() / refs.abs()).view(len(lengths), trials)
    return pd.DataFrame({"length": lengths, "kind": kind, "dtype": _dtype_name(dtype),
                         "naive": naive.mean(1).tolist(), "chunked": chunked.mean(1).tolist()})


class AccumulationBuffer:
    """Gradient accumulation with the running sums stored in a low-precision `dtype`.

    ``add(grads)`` adds one micro-batch's gradients (a list matching `params`; None = no gradient,
    e.g. from ``allow_unused``). ``mode="naive"``: straight into the total, ``total = round(total + g)``,
    so after k micro-batches the total is ~k times each addend and small ones are swamped.
    ``mode="chunked"``: into a chunk buffer (also `dtype`) that is added into the total every
    `chunk` adds and at ``total()``: the running sums stay within max(chunk, k/chunk) addends.
    ``total()`` returns the sums as fp32 tensors (zeros where nothing was added); ``received[i]``
    says whether params[i] ever got a gradient; ``reset()`` starts over.
    """

    def __init__(self, params: Iterable[torch.Tensor], dtype: torch.dtype = torch.bfloat16, mode: str = "naive",
                 chunk: int = 8):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        _check_chunk(chunk)
        self.dtype = _check_dtype(dtype)
        self.mode, self.chunk = mode, chunk
        self.params = list(params)
        self.reset()

    def reset(self) -> None:
        """Empty the total and the chunk buffer."""
        self._total = [torch.zeros(p.shape, dtype=self.dtype, device=p.device) for p in self.params]
        self._chunk = [torch.zeros_like(t) for t in self._total] if self.mode == "chunked" else []
        self.received = [False] * len(self.params)
        self.adds = 0  # micro-batches added since the last reset
        self._in_chunk = 0  # adds in the chunk buffer since it was last flushed

    def add(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Add one micro-batch's gradients (rounded to `dtype`, added, the sum rounded to `dtype`)."""
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"grads must have one entry per param ({len(self.params)}); got {len(grads)}")
        into = self._chunk if self.mode == "chunked" else self._total
        for i, g in enumerate(grads):
            if g is None:
                continue
            if g.shape != self.params[i].shape:
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)}; "
                                 f"params[{i}] has {tuple(self.params[i].shape)}")
            into[i] = _add_round(into[i], g.detach().to(self.dtype), self.dtype)
            self.received[i] = True
        self.adds += 1
        if self.mode == "chunked":
            self._in_chunk += 1
            if self._in_chunk >= self.chunk:
                self._flush()

    def _flush(self) -> None:
        if self.mode != "chunked" or self._in_chunk == 0:
            return
        for i in range(len(self._total)):
            self._total[i] = _add_round(self._total[i], self._chunk[i], self.dtype)
            self._chunk[i].zero_()
        self._in_chunk = 0

    def total(self) -> list[torch.Tensor]:
        """The accumulated sums as fp32 tensors (the chunk buffer is flushed into the total first)."""
        self._flush()
        return [t.float() for t in self._total]

    def __repr__(self) -> str:
        return (f"AccumulationBuffer({len(self.params)} tensors, dtype={_dtype_name(self.dtype)}, mode={self.mode!r}, "
                f"chunk={self.chunk}, adds={self.adds})")


def _relative_l2(approx: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> float:
    err = sum(float(((a.double() - r) ** 2).sum()) for a, r in zip(approx, ref))
    norm = sum(float((r ** 2).sum()) for r in ref)
    return (err / norm) ** 0.5


def accumulation_error(n_micro: Sequence[int] = (4, 16, 64, 256), dtype: torch.dtype = torch.bfloat16,
                       chunk: int = 8, seed: int = 0, shape: tuple[int, ...] = (4096,), signal: float = 1.0,
                       noise: float = 1.0) -> pd.DataFrame:
    """Relative L2 error of gradients accumulated in `dtype` over n micro-batches: naive vs chunked.

    A simulated parameter of `shape` has a true gradient m ~ N(0, signal²) per element; micro-batch i
    sees m + noise·ε_i (ε_i ~ N(0, 1)), and, as the trainer weights each micro-batch's loss by 1/n,
    contributes g_i = (m + noise·ε_i) / n. The total Σ g_i ≈ m has the size of one addend times n, so
    the naive running sum swamps its late addends (the mean part grows linearly, like the same-sign
    dot product); the chunked one keeps them. ref = the fp64 sum of the (fp32) g_i. Returns columns
    n, dtype, chunk, naive, chunked: ‖total − ref‖₂ / ‖ref‖₂. Deterministic for a seed.
    """
    _check_dtype(dtype)
    _check_chunk(chunk)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n in n_micro:
        n = int(n)
        if n < 1:
            raise ValueError(f"n_micro must be positive integers; got {n!r}")
        mean = signal * torch.randn(shape, generator=gen)
        grads = [(mean + noise * torch.randn(shape, generator=gen)) / n for _ in range(n)]
        ref = torch.zeros(shape, dtype=torch.float64)
        for g in grads:
            ref += g.double()
        errors = {}
        for mode in MODES:
            buf = AccumulationBuffer([ref], dtype, mode, chunk)
            for g in grads:
                buf.add([g])
            errors[mode] = _relative_l2(buf.total(), [ref])
        rows.append({"n": n, "dtype": _dtype_name(dtype), "chunk": chunk, **errors})
    return pd.DataFrame(rows, columns=["n", "dtype", "chunk", *MODES])
