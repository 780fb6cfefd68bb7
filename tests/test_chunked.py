"""Chunk-based accumulation (effitrain.train.chunked) and the lowprec_accumulation technique: exact
stalls of a bf16 running sum, chunked vs naive error on long dot products and on accumulated gradients
(margins measured on fixed seeds), the buffer's argument checks, and the technique in the trainer."""
from __future__ import annotations

import math

import pytest
import torch

import effitrain as et
from effitrain.data import mask_tokens
from effitrain.model import BertForMLM
from effitrain.techniques import StepContext, Technique
from effitrain.techniques.lowprec_accumulation import LowPrecAccumulation
from effitrain.train.chunked import AccumulationBuffer, accumulation_error, chunked_sum, dot_error_curve, naive_sum
from effitrain.train.step import TrainStep, make_optimizer


# -- the sums ------------------------------------------------------------------------------------------------
def test_naive_sum_in_fp32_matches_torch_sum_over_the_last_dim():
    x = torch.randn(3, 5, 1000, generator=torch.Generator().manual_seed(0))
    s = naive_sum(x, torch.float32)
    assert s.shape == (3, 5) and s.dtype == torch.float32
    torch.testing.assert_close(s, x.sum(-1), rtol=1e-5, atol=1e-4)  # each leading index its own sum
    c = chunked_sum(x, torch.float32, chunk=64)
    torch.testing.assert_close(c, x.double().sum(-1).float(), rtol=1e-5, atol=1e-4)


def test_bf16_running_sum_of_ones_stalls_at_256_and_chunked_is_exact():
    # 256 + 1 lies halfway between the bf16 neighbours 256 and 258: ties-to-even gives 256, forever
    assert float(naive_sum(torch.ones(257), torch.bfloat16)) == 256.0
    assert float(naive_sum(torch.ones(4096), torch.bfloat16)) == 256.0
    assert float(chunked_sum(torch.ones(4096), torch.bfloat16, chunk=64)) == 4096.0  # 64 chunks of 64, all exact
    assert float(chunked_sum(torch.ones(1000), torch.bfloat16, chunk=64)) == 1000.0  # zero-padded last chunk
    assert float(naive_sum(torch.ones(4096), torch.float16)) == 2048.0  # fp16: 2048 + 1 is the tie
    assert float(naive_sum(torch.ones(4096), torch.float32)) == 4096.0


@pytest.mark.parametrize("dtype,margin", [(torch.bfloat16, 1.5), (torch.float16, 100.0)])
def test_chunked_dot_product_beats_naive_at_65536(dtype, margin):
    # measured (seed 0, 8 trials, chunk 64): bf16 naive 0.984, chunked 0.500 (the 1024 chunk sums of ~16
    # are swamped in turn once the total passes 4096: chunk 64 is far from sqrt(65536) = 256);
    # fp16 naive 0.875, chunked 0.0020
    df = dot_error_curve(lengths=(65536,), dtype=dtype, chunk=64, kind="same-sign", trials=8, seed=0)
    assert list(df.columns) == ["length", "kind", "dtype", "naive", "chunked"]
    naive, chunked = float(df.naive[0]), float(df.chunked[0])
    assert naive > 0.5  # the naive sum has stalled far below the true value
    assert 0 < chunked < naive / margin, (naive, chunked)
    again = dot_error_curve(lengths=(65536,), dtype=dtype, chunk=64, kind="same-sign", trials=8, seed=0)
    assert again.equals(df)  # deterministic for a seed


# -- the gradient buffer -----------------------------------------------------------------------------------------
def test_buffer_in_fp32_is_the_plain_sum():
    gen = torch.Generator().manual_seed(0)
    params = [torch.zeros(7, 3), torch.zeros(11)]
    grads = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(20)]
    plain = [torch.zeros_like(p) for p in params]
    for gs in grads:
        plain = [a + g for a, g in zip(plain, gs)]
    naive = AccumulationBuffer(params, torch.float32, "naive")
    chunked = AccumulationBuffer(params, torch.float32, "chunked", chunk=6)  # 20 = 3 chunks + 2 left at total()
    for gs in grads:
        naive.add(gs)
        chunked.add(gs)
    for a, b, c in zip(naive.total(), chunked.total(), plain):
        assert torch.equal(a, c)  # the same additions in the same order
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)
    naive.reset()
    assert all(float(t.abs().sum()) == 0 for t in naive.total()) and naive.adds == 0


def test_buffer_chunked_beats_naive_in_bf16_at_256_micro_batches():
    # measured (seed 0, shape 4096, chunk 8): naive 0.0187, chunked 0.0055 relative L2 error at n = 256
    df = accumulation_error(n_micro=(256,), dtype=torch.bfloat16, chunk=8, seed=0)
    naive, chunked = float(df.naive[0]), float(df.chunked[0])
    assert 0 < chunked < naive / 2.5, (naive, chunked)


@pytest.mark.parametrize("kwargs,name", [(dict(mode="fp32"), "mode"), (dict(chunk=0), "chunk"),
                                         (dict(dtype=torch.int32), "dtype"), (dict(dtype="bf16"), "dtype")])
def test_bad_buffer_arguments_are_refused_naming_them(kwargs, name):
    with pytest.raises(ValueError) as info:
        AccumulationBuffer([torch.zeros(2)], **kwargs)
    message = str(info.value)
    assert message.startswith(name) and "\n" not in message, message


# -- the technique -------------------------------------------------------------------------------------------------
def short(cfg):
    """3 steps of 4 micro-batches of 8 rows each."""
    return cfg.replace(budget="3steps", grad_accum=4, batch_size=8, evals=1, log_every=1)


def curve(run):
    return [row["train_loss"] for row in run.history.steps]


def test_fp32_mode_is_the_baseline_and_the_low_precision_modes_train(smoke):
    cfg, data = smoke
    baseline = et.train(short(cfg), data=data, progress=False)
    same = et.train(short(cfg), [et.technique("lowprec_accumulation", mode="fp32")], data=data, progress=False)
    assert len(curve(baseline)) == 3
    assert curve(same) == curve(baseline)  # bit for bit: the trainer's own accumulation
    for mode in ("naive", "chunked"):
        run = et.train(short(cfg), [et.technique("lowprec_accumulation", mode=mode, chunk=2)], data=data,
                       progress=False)
        assert run.status == "completed", run.message
        assert all(math.isfinite(x) for x in curve(run)), curve(run)
        assert run.extra["techniques"]["lowprec_accumulation"] == {"steps": 3, "micro_batches": 12}
        assert curve(run) != curve(baseline)  # measured: step 3 differs in the 6th digit (bf16 sums)


class GradProbe(Technique):
    """Copies the gradients the optimizer is about to use (runs after lowprec_accumulation's before_update)."""

    name = "grad_probe"

    def before_update(self, model, optimizer, ctx):
        self.grads = [p.grad.detach().double().clone() for p in model.parameters()]


def step_grads(cfg, data, mode: str | None, k: int = 64, chunk: int = 8) -> list[torch.Tensor]:
    """The gradients of one TrainStep of k one-row micro-batches, from the same model and batches."""
    torch.manual_seed(0)
    model = BertForMLM(cfg.model, data.vocab_size)
    ctx = StepContext.standalone(cfg)
    techniques: list[Technique] = []
    if mode is not None:
        t = LowPrecAccumulation(mode=mode, chunk=chunk)
        t.on_model(model, ctx)
        techniques.append(t)
    probe = GradProbe()
    step = TrainStep(model, make_optimizer(model, cfg, torch.device("cpu")), cfg, torch.device("cpu"),
                     [*techniques, probe])
    gen = torch.Generator().manual_seed(1)
    batches = [mask_tokens(data.train.ids[i:i + 1], cfg.data.mask_prob, data.vocab_size, gen) for i in range(k)]
    step(batches, ctx)
    return probe.grads


def rel_l2(grads, ref):
    return math.sqrt(sum(float(((g - r) ** 2).sum()) for g, r in zip(grads, ref)) /
                     sum(float((r ** 2).sum()) for r in ref))


def test_written_gradients_chunked_closer_than_naive(smoke):
    # measured (seeds 0-3, 64 one-row micro-batches, chunk 8, bf16): naive 0.0114-0.0123, chunked 0.0036-0.0038
    cfg, data = smoke
    ref = step_grads(cfg, data, None)
    assert rel_l2(step_grads(cfg, data, "fp32"), ref) == 0.0  # the baseline's own accumulation
    naive = rel_l2(step_grads(cfg, data, "naive"), ref)
    chunked = rel_l2(step_grads(cfg, data, "chunked"), ref)
    assert naive > 1e-3 and chunked > 1e-4  # low precision does change the gradients written
    assert chunked < naive / 2, (naive, chunked)


def test_claims_the_backward_only_when_it_takes_it_over():
    assert LowPrecAccumulation(mode="chunked").claimed() == ("backward",)
    assert LowPrecAccumulation(mode="naive", dtype="fp16").claimed() == ("backward",)
    assert LowPrecAccumulation(mode="fp32").claimed() == ()
    with pytest.raises(et.ConfigError, match="lowprec_accumulation.mode"):
        et.technique("lowprec_accumulation", mode="bf8")
