"""SVD-LoRA: a LoRA adapter whose singular vectors are frozen and whose singular values are searched.

Each LoRA factor is decomposed on its own, A = U_A diag(s_A) V_Aᵀ and B = U_B diag(s_B) V_Bᵀ.
U and V never change. The search vector x holds offsets to the top k = ⌊α·r⌋ singular values of
every factor, laid out module by module as [x_A (k), x_B (k)], so its length is
modules × 2 × k and x = 0 reproduces the adapter exactly:

    A' = U_A diag(s_A + [x_A, 0]) V_Aᵀ        B' = U_B diag(s_B + [x_B, 0]) V_Bᵀ
    ΔW = scaling · B' A'                     (scaling = lora_alpha / r, as in PEFT)

`split` is the one description of that layout: the merge extension and the shared-basis LoRA ops
(workers/engine/) take a vector's slices from it. The strategy draws points z in units of
`step_scales()`; `offsets(z)` turns them into x.

The basis travels to workers once as a safetensors file (`save` / `load`); afterwards a candidate
is only its vector x.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from essa.io import atomic_write_bytes, parse_safetensors, safetensors_bytes


@dataclass(frozen=True)
class FactorSVD:
    """One LoRA factor as U diag(s) Vᵀ, kept in float64 so that x = 0 round-trips exactly."""

    U: np.ndarray  # (m, r)
    s: np.ndarray  # (r,)
    Vt: np.ndarray  # (r, n)

    @classmethod
    def of(cls, matrix: np.ndarray) -> FactorSVD:
        U, s, Vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
        return cls(U=U, s=s, Vt=Vt)

    def rebuild(self, offsets: np.ndarray) -> np.ndarray:
        """The factor with `offsets` added to its leading singular values."""
        s = self.s.copy()
        s[: len(offsets)] += offsets
        return (self.U * s) @ self.Vt


class SVDLoRA:
    """The frozen SVD basis of a LoRA adapter plus the map from a search vector to weights.

    `lora` maps a module name (Hugging Face naming, e.g. ``model.layers.0.self_attn.q_proj``) to
    its factors (A: r × in, B: out × r).
    """

    def __init__(
        self,
        modules: list[str],
        a: list[FactorSVD],
        b: list[FactorSVD],
        rank: int,
        lora_alpha: float,
        searched: int,
    ):
        if not 1 <= searched <= rank:
            raise ValueError(f"searched singular values per factor must be in [1, {rank}], got {searched}")
        self.modules = list(modules)
        self.a = a
        self.b = b
        self.rank = rank
        self.lora_alpha = float(lora_alpha)
        self.searched = searched

    @classmethod
    def from_lora(
        cls,
        lora: dict[str, tuple[np.ndarray, np.ndarray]],
        rank: int,
        lora_alpha: float,
        alpha_fraction: float = 1.0,
    ) -> SVDLoRA:
        """Decompose every factor; search the top ⌊alpha_fraction · rank⌋ singular values of each."""
        searched = max(1, math.floor(alpha_fraction * rank))
        modules = sorted(lora, key=_module_sort_key)
        a = [FactorSVD.of(lora[m][0]) for m in modules]
        b = [FactorSVD.of(lora[m][1]) for m in modules]
        return cls(modules, a, b, rank, lora_alpha, searched)

    @property
    def dim(self) -> int:
        return len(self.modules) * 2 * self.searched

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.rank

    def split(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per module (x_A, x_B) views of the search vector."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"search vector has shape {x.shape}, expected ({self.dim},)")
        k = self.searched
        return [(x[2 * k * i : 2 * k * i + k], x[2 * k * i + k : 2 * k * (i + 1)]) for i in range(len(self.modules))]

    def factors(self, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Module → (A', B') for the candidate x (float64)."""
        return {
            m: (fa.rebuild(xa), fb.rebuild(xb))
            for m, fa, fb, (xa, xb) in zip(self.modules, self.a, self.b, self.split(x))
        }

    def delta(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Module → ΔW = scaling · B' A' (out × in, float64)."""
        return {m: self.scaling * (b @ a) for m, (a, b) in self.factors(x).items()}

    def step_scales(self) -> np.ndarray:
        """Per-coordinate scale of the search: the RMS of the searched singular values of that factor.

        The strategy samples in units of these scales, so one initial sigma fits factors of very
        different magnitude (an SFT adapter's B is typically far smaller than its A), and a factor
        whose singular values are all zero still moves (its scale falls back to the global RMS).
        """
        k = self.searched
        factor_rms: list[float] = []
        for fa, fb in zip(self.a, self.b):
            factor_rms += [_rms(fa.s[:k]), _rms(fb.s[:k])]
        per_factor = np.array(factor_rms)
        fallback = _rms(per_factor[per_factor > 0]) if np.any(per_factor > 0) else 1.0
        per_factor[per_factor <= 0] = fallback
        return np.repeat(per_factor, k)

    def offsets(self, z: np.ndarray) -> np.ndarray:
        """The singular-value offsets x of search points z, which the strategy draws in units of the
        step scales: x = z · step_scales(). z is one point (dim,) or a batch (n, dim)."""
        z = np.asarray(z, dtype=np.float64)
        if z.shape[-1:] != (self.dim,):
            raise ValueError(f"search points have shape {z.shape}, expected (..., {self.dim})")
        return z * self.step_scales()

    # ---- persistence: safetensors bytes, no pickle ----------------------------------------------

    def to_bytes(self) -> bytes:
        tensors = {}
        for m, fa, fb in zip(self.modules, self.a, self.b):
            for tag, f in (("A", fa), ("B", fb)):
                tensors[f"{m}.{tag}.U"] = f.U
                tensors[f"{m}.{tag}.s"] = f.s
                tensors[f"{m}.{tag}.Vt"] = f.Vt
        meta = {
            "modules": json.dumps(self.modules),
            "rank": str(self.rank),
            "lora_alpha": repr(self.lora_alpha),
            "searched": str(self.searched),
        }
        return safetensors_bytes(tensors, meta)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "SVD-LoRA basis") -> SVDLoRA:
        tensors, meta = parse_safetensors(data, what=source)
        try:
            modules = json.loads(meta["modules"])
            a = [FactorSVD(tensors[f"{m}.A.U"], tensors[f"{m}.A.s"], tensors[f"{m}.A.Vt"]) for m in modules]
            b = [FactorSVD(tensors[f"{m}.B.U"], tensors[f"{m}.B.s"], tensors[f"{m}.B.Vt"]) for m in modules]
            return cls(modules, a, b, int(meta["rank"]), float(meta["lora_alpha"]), int(meta["searched"]))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{source} is not a valid SVD-LoRA basis ({exc!r}); delete it and rerun") from exc

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> SVDLoRA:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SVD-LoRA basis not found: {path}")
        return cls.from_bytes(path.read_bytes(), source=str(path))


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else 0.0


def _module_sort_key(name: str) -> tuple:
    """Sort layer by number, then module name: model.layers.2.* before model.layers.10.*."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))
