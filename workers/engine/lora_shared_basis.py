"""Shared-basis LoRA on CPU: one LoRA computation per layer for the whole population.

Every candidate adapter of a run comes from the same frozen SVD basis (essa/model/svd_lora.py):
A_c = U_A diag(a_c) V_Aᵀ and B_c = U_B diag(b_c) V_Bᵀ, and only the r numbers a_c and b_c differ
between candidates. For a token of candidate c:

    B_c A_c x = U_B · (b_c ⊙ (V_Bᵀ U_A · (a_c ⊙ (V_Aᵀ x))))

V_Aᵀ, the r × r core V_Bᵀ U_A and U_B are the same for every candidate. So a layer does three
dense matmuls over ALL tokens of a step, whatever their adapter, plus two per-token scalings read
from a table (slot → a_c, b_c): no grouping by adapter, no per-adapter weights read, and the cost
does not grow with λ. The slices of a fused layer (q, k, v of qkv_proj) share the matmuls: the
shrink stacks their V_A, the core is block-diagonal, the expand writes every slice in one `addmm_`.

vLLM still loads each candidate as a LoRA adapter into a slot: its weights stay the truth, and its
scheduler and token → slot mapping are used unchanged. When the slot layout changes (vLLM's punica
wrapper is told on `update_metadata`), a layer projects each new slot's weights onto its basis,
a = diag(U_Aᵀ A V_A) and b = diag(U_Bᵀ B V_B) (B as vLLM stores it, scaling folded in), and
checks what the projection leaves over. A slot holding anything the basis cannot express (an
adapter not built from it) sends the layer back to the grouped ops of lora_grouped.py until
that slot is refilled, so any adapter still gets the right output.

The engine registers a basis with `register_basis` through the worker extension
(`LoRABasisExtension.essa_register_lora_basis`); layers without one use the grouped ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vllm.lora.layers.base_linear import BaseLinearLayerWithLoRA

# Relative Frobenius residual of a slot's weights after projection onto the basis. vLLM stores
# the weights in bf16 (relative rounding ≤ 2⁻⁹ per entry, ~3e-3 over a matrix); an adapter from
# another basis leaves O(1).
RESIDUAL_TOLERANCE = 2e-2

_registry: dict[int, LayerBasis] = {}  # data_ptr of the layer's lora_a_stacked[0] -> its basis


@dataclass
class SliceBasis:
    """One adapted module (a slice of a vLLM layer): A = U_A diag(a) V_Aᵀ, B = U_B diag(b) V_Bᵀ."""

    u_a: torch.Tensor  # (r, r)
    vt_a: torch.Tensor  # (r, in)
    u_b: torch.Tensor  # (out, r)
    vt_b: torch.Tensor  # (r, r)

    @classmethod
    def of(cls, fa, fb) -> SliceBasis:
        """The frozen U and V of one module's factors A and B (essa.model.svd_lora.FactorSVD), float32."""
        f32: dict[str, Any] = dict(dtype=torch.float32)
        return cls(
            torch.as_tensor(fa.U, **f32),
            torch.as_tensor(fa.Vt, **f32),
            torch.as_tensor(fb.U, **f32),
            torch.as_tensor(fb.Vt, **f32),
        )


class LayerBasis:
    """The shared matmuls of one vLLM LoRA layer and its per-slot scales."""

    def __init__(
        self, slices: list[SliceBasis | None], sizes: list[int], in_dim: int, rank: int, slots: int, dtype: torch.dtype
    ):
        n = len(sizes) * rank
        shrink = torch.zeros(in_dim, n)
        core = torch.zeros(n, n)
        expand = torch.zeros(n, sum(sizes))
        offset = 0
        for i, (part, size) in enumerate(zip(slices, sizes)):
            block = slice(i * rank, (i + 1) * rank)
            if part is not None:
                shrink[:, block] = part.vt_a.t()
                core[block, block] = part.u_a.t() @ part.vt_b.t()  # V_Bᵀ U_A, in row-vector form
                expand[block, offset : offset + size] = part.u_b.t()
            offset += size
        self.slices = slices
        self.sizes = sizes
        self.rank = rank
        self.shrink = shrink.to(dtype)  # (in, S·r): V_A of every slice side by side
        self.core = core  # (S·r, S·r), block-diagonal
        self.core_lowp = core.to(dtype)
        self.expand = expand.to(dtype)  # (S·r, out): U_Bᵀ of each slice at that slice's columns
        # Row 1 + slot (row 0: tokens without adapter, all zero):
        self.scales = torch.zeros(slots + 1, 2 * n, dtype=dtype)  # [a of every slice, b of every slice]
        self.middles = torch.zeros(slots + 1, n, n, dtype=dtype)  # diag(a) · core · diag(b)
        self.loaded = [0] * slots  # the adapter id whose scales are in each row (0: empty slot)
        self.foreign: set[int] = set()  # slots holding an adapter the basis cannot express

    def refresh(self, a: list[torch.Tensor], b: list[torch.Tensor], slot_ids: list[int]) -> None:
        """Project the slots whose adapter changed since the last call (all of them at once)."""
        changed = [slot for slot, lora_id in enumerate(slot_ids) if self.loaded[slot] != lora_id]
        if not changed:
            return
        self.loaded = list(slot_ids)
        self.foreign.difference_update(changed)
        rows = torch.tensor(changed) + 1
        self.scales[rows] = 0
        self.middles[rows] = 0
        filled = [slot for slot in changed if slot_ids[slot]]
        if not filled:
            return
        slots = torch.tensor(filled)
        scales, fits = self._project(slots, a, b)
        n = scales.shape[1] // 2
        self.scales[slots + 1] = scales.to(self.scales.dtype)
        self.middles[slots + 1] = (scales[:, :n, None] * self.core * scales[:, None, n:]).to(self.middles.dtype)
        self.foreign.update(slot for slot, ok in zip(filled, fits.tolist()) if not ok)

    def _project(
        self, slots: torch.Tensor, a: list[torch.Tensor], b: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per slot, its scales (a, b of every slice) and whether the basis holds its weights.

        u_j v_jᵀ (j = 1..r) are orthonormal matrices, so the coordinate of W on each is u_jᵀ W v_j and
        what the projection leaves over is ‖W‖² − Σ_j coordinate² (padding beyond the basis' rank included).
        """
        r, n = self.rank, len(self.sizes) * self.rank
        scales = torch.zeros(len(slots), 2 * n)
        fits = torch.ones(len(slots), dtype=torch.bool)
        for i, (part, size) in enumerate(zip(self.slices, self.sizes)):
            a_w = a[i].index_select(0, slots).flatten(1, 2).float()  # (G, max rank, in)
            b_w = b[i].index_select(0, slots).flatten(1, 2).float()  # (G, out, max rank)
            if part is None:
                fits &= (a_w.flatten(1).abs().amax(1) == 0) & (b_w.flatten(1).abs().amax(1) == 0)
                continue
            for full, w, u, vt, column in (
                (a_w, a_w[:, :r], part.u_a, part.vt_a, i * r),
                (b_w, b_w[:, :size, :r], part.u_b, part.vt_b, n + i * r),
            ):
                coordinates = ((u.t() @ w) * vt).sum(-1)  # (G, r): u_jᵀ W v_j
                total = full.square().flatten(1).sum(1)
                left = (total - coordinates.square().sum(1)).clamp_min(0)
                fits &= left <= RESIDUAL_TOLERANCE**2 * total
                scales[:, column : column + r] = coordinates
        return scales, fits

    def add(self, y: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, dense, scale: float) -> None:
        """y += the LoRA output of every token. x: (tokens, in); rows: 1 + the token's slot (0: none);
        dense: (G, m, slots) when the tokens are G contiguous runs of m, one per adapter (decode), else None."""
        n = len(self.sizes) * self.rank
        h = x @ self.shrink  # (tokens, S·r)
        if dense is not None:  # one batched r×r step per adapter: diag(a) core diag(b), precomputed
            g_count, m, slots = dense
            middles = (
                self.middles[slots.start + 1 : slots.stop + 1] if isinstance(slots, slice) else self.middles[slots + 1]
            )
            g = torch.bmm(h.view(g_count, m, n), middles).view(-1, n)
        else:
            table = self.scales.index_select(0, rows)  # (tokens, 2·S·r)
            g = ((h * table[:, :n]) @ self.core_lowp) * table[:, n:]
        y.addmm_(g, self.expand, alpha=scale)


def register_basis(lora_a: torch.Tensor, basis: LayerBasis) -> None:
    """Use `basis` for the vLLM layer whose first stacked A factor is `lora_a`."""
    _registry[lora_a.data_ptr()] = basis


def clear() -> None:
    _registry.clear()


def try_add(
    y: torch.Tensor,
    x: torch.Tensor,
    a: list[torch.Tensor],
    b: list[torch.Tensor],
    rows: torch.Tensor,
    slot_ids: torch.Tensor,
    scale: float,
    dense=None,
) -> bool:
    """Add the layer's LoRA output through its shared basis; False (nothing done) when it cannot.
    rows: per token 1 + its slot (0: no adapter), computed once per step by the caller."""
    basis = _registry.get(a[0].data_ptr())
    if basis is None or not slot_ids.numel():
        return False
    basis.refresh(a, b, slot_ids.tolist())
    if basis.foreign or y.dim() != 2 or y.shape[-1] != basis.expand.shape[1]:
        return False
    n = rows.shape[0]
    if x.shape[0] < n:
        return False
    basis.add(y[:n], x[:n], rows, dense if x.shape[0] == n else None, scale)  # x rows beyond n: padding
    return True


def layer_basis(layer: BaseLinearLayerWithLoRA, slices: list[SliceBasis | None], rank: int) -> LayerBasis:
    """The LayerBasis of a vLLM LoRA layer (`BaseLinearLayerWithLoRA`) for its slices' bases."""
    a0 = layer.lora_a_stacked[0]
    return LayerBasis(slices, list(layer.output_slices), a0.shape[-1], rank, a0.shape[0], a0.dtype)
