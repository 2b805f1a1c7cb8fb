"""The blend of soft attention's grid features, c_t = m_t f, over the steps of one rollout.

Why not plain ``m_t @ f`` each step: every step's backward then writes the gradient of all of f
(B, L, D) as an outer product m_t^T g_t and adds it to the steps' sum, 2T passes over the largest
tensor of the rollout, which is what bounds soft attention's training step on a CPU (memory
traffic, not arithmetic). Here each step's backward keeps its (m_t, g_t) and f's gradient is formed
once, sum_t m_t^T g_t = M^T G, one batched product. Under autocast f is also cast once, not at
every step's product. Compiled graphs (torch.compile fuses what it can on its own) and passes
without gradients take the plain product.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _Shared(torch.autograd.Function):
    """f as the steps read it (cast once under autocast); its backward forms f's gradient from the
    steps' kept (m_t, g_t). The steps pass no gradient to it directly, so its incoming one is None."""

    @staticmethod
    def forward(ctx, f: Tensor, kept: list) -> Tensor:
        ctx.kept, ctx.dtype = kept, f.dtype
        ctx.set_materialize_grads(False)
        if torch.is_autocast_enabled(f.device.type):
            return f.to(torch.get_autocast_dtype(f.device.type))
        return f.view_as(f)

    @staticmethod
    def backward(ctx, grad: Tensor | None) -> tuple[Tensor | None, None]:
        if not ctx.kept:
            return grad, None
        ms, gs = zip(*ctx.kept)
        ctx.kept.clear()
        g = torch.stack(gs, 1)  # (B, T, D)
        total = (torch.stack(ms, 1).to(g.dtype).transpose(1, 2) @ g).to(ctx.dtype)  # (B, L, D)
        return (total if grad is None else grad.to(ctx.dtype) + total), None


class _Step(torch.autograd.Function):
    """c_t = m_t f; the backward returns m_t's gradient and keeps (m_t, g_t) for f's."""

    @staticmethod
    def forward(ctx, m: Tensor, f: Tensor, kept: list) -> Tensor:
        ctx.save_for_backward(m, f)
        ctx.kept = kept
        return (m[:, None].to(f.dtype) @ f).squeeze(1)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:
        m, f = ctx.saved_tensors
        ctx.kept.append((m, g))
        return (f @ g[..., None].to(f.dtype)).squeeze(-1).to(m.dtype), None, None


class Blend:
    """``Blend(f)(m_t)`` = m_t f for f (B, L, D) and the mixing vector m_t (B, L) of each step."""

    once = True  # False: the plain per-step product, the reference the tests compare this with

    def __init__(self, f: Tensor):
        self.shared = self.once and not torch.compiler.is_compiling() and torch.is_grad_enabled() and f.requires_grad
        self.kept: list[tuple[Tensor, Tensor]] = []
        self.f = _Shared.apply(f, self.kept) if self.shared else f

    def __call__(self, m: Tensor) -> Tensor:
        if self.shared:
            return _Step.apply(m, self.f, self.kept)
        return (m[:, None] @ self.f).squeeze(1)
