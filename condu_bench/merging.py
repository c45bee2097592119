"""ConDU's decoupling-unifying merge of task deltas, and bit-packed storage of its masks.

What the reference computes (zhangzicong518/ConDU, ``src/delta_models.py``: ``unify_delta_models``,
``apply_delta_model``; the session loop in ``src/main.py``), for deltas delta_1..delta_t of the same
tensors, per tensor and per element j:

- s_j = sign of the mean over tasks of delta_i,j, an exact zero counting as -1;
- M_i,j = [delta_i,j * s_j > 0] (strict: a zero entry is in no mask);
- U_j = s_j * max_i |M_i,j * delta_i,j|;
- one rescaler per task, lambda_i = sum_n mean|delta_i[n]| / sum_n mean|M_i[n] * U[n]| (mean within a
  tensor, summed over tensors, so every tensor counts the same whatever its size);
- decoupled task i: lambda_i * M_i * U.

Hence, whenever lambda_i > 0, the decoupled delta keeps the sign of delta_i wherever it is non-zero and has
the same sum-of-means L1 norm. Where this module deviates from the reference:

- lambda_i = 0.0 when its denominator is 0, i.e. no entry of task i agrees with the elected sign (an
  all-zero delta, or one that every other task outvotes everywhere). The reference divides by zero there and
  reconstructs NaN (0/0) or inf * 0 = NaN; here the task reconstructs to zero and its L1 is not preserved.
- the sign is taken from the sum over tasks (the same sign as the mean) and the L1 sums are accumulated in
  Python floats (float64); the per-tensor means are computed in the compute dtype.
- empty tensors (no elements) contribute nothing to the L1 sums (their mean would be NaN).

Everything is computed in float32, or in the deltas' dtype when it is wider (float64); U is kept in that
dtype. Only torch is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Unified",
    "unify",
    "decouple",
    "add_task",
    "pack_masks",
    "unpack_masks",
    "storage_bytes",
    "storage_report",
    "task_delta",
    "apply_delta",
]


@dataclass
class Unified:
    """The merged state of t tasks: one unified delta ``U``, and per task a bool mask dict and a rescaler."""

    U: dict[str, Tensor]
    masks: list[dict[str, Tensor]]
    rescalers: list[float]


# ---------------------------------------------------------------- unify / decouple


def _compute_dtype(tensors: Iterable[Tensor]) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _unify_tensor(tensors: list[Tensor]) -> tuple[Tensor, list[Tensor], list[float], list[float]]:
    """Merge one tensor of every task: (U, masks, mean|delta_i|, mean|M_i * U|), one task at a time."""
    dtype = _compute_dtype(tensors)
    device = tensors[0].device
    tensors = [t.detach().to(device=device, dtype=dtype) for t in tensors]

    total = torch.zeros_like(tensors[0])
    for t in tensors:
        total += t
    positive = total > 0  # s_j = +1 here, -1 elsewhere (a zero sum counts as -1)
    del total

    masks: list[Tensor] = []
    peak = torch.zeros_like(tensors[0])  # max_i |delta_i,j| over the tasks whose sign agrees with s_j
    l1_delta: list[float] = []
    empty = tensors[0].numel() == 0
    for t in tensors:
        # delta * s > 0 without a multiply: positive entries where s = +1, negative ones where s = -1
        mask = torch.where(positive, t > 0, t < 0)
        masks.append(mask)
        magnitude = t.abs()
        l1_delta.append(0.0 if empty else magnitude.mean().item())
        torch.maximum(peak, magnitude.masked_fill_(~mask, 0), out=peak)

    l1_masked = [0.0 if empty else torch.where(mask, peak, 0).mean().item() for mask in masks]
    unified = torch.where(positive, peak, -peak)
    return unified, masks, l1_delta, l1_masked


def _merge(keys: Sequence[str], tensors_of: Callable[[str], list[Tensor]], n_tasks: int) -> Unified:
    """Unify key by key, so that only one tensor's worth of every task is materialised at a time."""
    U: dict[str, Tensor] = {}
    masks: list[dict[str, Tensor]] = [{} for _ in range(n_tasks)]
    numerator = [0.0] * n_tasks
    denominator = [0.0] * n_tasks
    for key in keys:
        U[key], key_masks, l1_delta, l1_masked = _unify_tensor(tensors_of(key))
        for i in range(n_tasks):
            masks[i][key] = key_masks[i]
            numerator[i] += l1_delta[i]
            denominator[i] += l1_masked[i]
    # A zero denominator means task i has no entry in its mask: it reconstructs to zero (lambda = 0)
    # instead of the reference's NaN.
    rescalers = [num / den if den > 0 else 0.0 for num, den in zip(numerator, denominator)]
    return Unified(U=U, masks=masks, rescalers=rescalers)


def _check_like(reference: Mapping[str, Tensor], other: Mapping[str, Tensor], what: str) -> None:
    """ValueError naming the first key that is missing, extra, non-float or of another shape."""
    missing = [k for k in reference if k not in other]
    if missing:
        raise ValueError(f"{what} lacks key {missing[0]!r}")
    extra = [k for k in other if k not in reference]
    if extra:
        raise ValueError(f"{what} has extra key {extra[0]!r}")
    for key, ref in reference.items():
        tensor = other[key]
        if not tensor.is_floating_point():
            raise ValueError(f"{what}: key {key!r} is not a floating-point tensor ({tensor.dtype})")
        if tensor.shape != ref.shape:
            raise ValueError(f"{what}: key {key!r} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}")


def unify(deltas: Sequence[Mapping[str, Tensor]]) -> Unified:
    """Unify task deltas into one delta U plus a mask and a rescaler per task (ConDU's unify step).

    Per the module docstring (``unify_delta_models`` in the reference's ``src/delta_models.py``). All deltas
    must hold the same keys with the same shapes and floating-point dtypes, else ValueError naming the key.
    Tensors are processed one key at a time; only U and the masks are kept.
    """
    if not deltas:
        raise ValueError("unify needs at least one delta")
    first = deltas[0]
    for i, delta in enumerate(deltas):
        _check_like(first, delta, f"delta {i}")
    return _merge(list(first), lambda key: [d[key] for d in deltas], len(deltas))


def _decouple_tensor(unified: Unified, i: int, key: str) -> Tensor:
    u = unified.U[key]
    return torch.where(unified.masks[i][key], u, 0).mul_(unified.rescalers[i])


def decouple(unified: Unified, i: int) -> dict[str, Tensor]:
    """Task i's reconstructed delta, lambda_i * M_i * U (``apply_delta_model`` in the reference, minus theta0)."""
    if not 0 <= i < len(unified.masks):
        raise IndexError(f"task {i} out of range: {len(unified.masks)} tasks stored")
    return {key: _decouple_tensor(unified, i, key) for key in unified.U}


def add_task(unified: Unified | None, new_delta: Mapping[str, Tensor]) -> Unified:
    """One ConDU session: decouple every stored task, append ``new_delta``, and unify them all again.

    As in the reference's ``src/main.py``, masks and rescalers are recomputed every session from the
    *reconstructed* earlier deltas, not from the originals, so the reconstruction error compounds over
    sessions (signs and the L1 of each task are still preserved, as long as its rescaler stays > 0). The
    result equals ``unify([decouple(unified, 0), ..., new_delta])``, computed one key at a time so that the
    full reconstructions are never held together.
    """
    if unified is None:
        return unify([new_delta])
    _check_like(unified.U, new_delta, "new delta")
    n_old = len(unified.masks)

    def tensors_of(key: str) -> list[Tensor]:
        return [_decouple_tensor(unified, i, key) for i in range(n_old)] + [new_delta[key]]

    return _merge(list(unified.U), tensors_of, n_old + 1)


# ---------------------------------------------------------------- bit-packed masks

# Most significant bit first, the order of numpy.packbits' default.
_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)


def _pack(mask: Tensor) -> Tensor:
    flat = mask.reshape(-1).to(torch.uint8)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifted = flat.view(-1, 8) << _SHIFTS.to(flat.device)
    return shifted.sum(dim=1, dtype=torch.uint8)  # the eight shifted bits never overlap, so sum == or


def _unpack(packed: Tensor, shape: torch.Size) -> Tensor:
    bits = (packed.reshape(-1, 1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(-1)[: math.prod(shape)].to(torch.bool).reshape(shape)


def pack_masks(masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Bool masks as flat uint8 tensors of 8 bits a byte (ceil(n/8) bytes), storable in safetensors.

    The shapes are not stored: ``unpack_masks`` takes them, e.g. from the unified delta's tensors.
    """
    for key, mask in masks.items():
        if mask.dtype != torch.bool:
            raise ValueError(f"mask {key!r} is {mask.dtype}, not bool")
    return {key: _pack(mask) for key, mask in masks.items()}


def unpack_masks(packed: Mapping[str, Tensor], shapes: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """Inverse of ``pack_masks``; ``shapes`` maps every key to its mask's shape (``{k: U[k].shape}``)."""
    if set(packed) != set(shapes):
        odd = sorted(set(packed) ^ set(shapes))[0]
        raise ValueError(f"key {odd!r} is in only one of the packed masks and the shapes")
    out: dict[str, Tensor] = {}
    for key, bits in packed.items():
        shape = torch.Size(shapes[key])
        expected = -(-math.prod(shape) // 8)
        if bits.dtype != torch.uint8 or bits.numel() != expected:
            raise ValueError(
                f"packed mask {key!r} has {bits.numel()} {bits.dtype} values, expected {expected} uint8 "
                f"for shape {tuple(shape)}"
            )
        out[key] = _unpack(bits, shape)
    return out


def storage_bytes(tensors: Mapping[str, Tensor]) -> int:
    """Bytes of the tensor data in a dict (U, a packed mask dict, a state dict), headers not counted."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def storage_report(unified: Unified) -> dict[str, int | list[int]]:
    """Bytes ConDU stores: ``unified`` (U), ``masks`` (each task's packed masks) and their ``total``.

    The rescalers (one float per task) are left out.
    """
    u_bytes = storage_bytes(unified.U)
    mask_bytes = [storage_bytes(pack_masks(m)) for m in unified.masks]
    return {"unified": u_bytes, "masks": mask_bytes, "total": u_bytes + sum(mask_bytes)}


# ---------------------------------------------------------------- deltas of state dicts


def task_delta(
    finetuned: Mapping[str, Tensor], pretrained: Mapping[str, Tensor], keys: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """finetuned - pretrained for floating-point tensors, in float32 or wider (detached).

    ``keys=None`` takes every floating-point tensor of ``pretrained`` and skips the others (the reference
    skips int64 and uint8 tensors, ``src/delta_models.py``; CLIP's state dict holds only float tensors, so
    both give the same keys). An explicitly named key must be a floating-point tensor in both dicts.
    ValueError for a missing key or a shape mismatch.
    """
    if keys is None:
        keys = [k for k, v in pretrained.items() if v.is_floating_point()]
    delta: dict[str, Tensor] = {}
    for key in keys:
        for name, state in (("pretrained", pretrained), ("finetuned", finetuned)):
            if key not in state:
                raise ValueError(f"key {key!r} is missing from the {name} state dict")
        base, tuned = pretrained[key], finetuned[key]
        if not (base.is_floating_point() and tuned.is_floating_point()):
            raise ValueError(f"key {key!r} is not a floating-point tensor in both state dicts")
        if base.shape != tuned.shape:
            raise ValueError(f"key {key!r}: finetuned shape {tuple(tuned.shape)} != pretrained {tuple(base.shape)}")
        dtype = _compute_dtype((base, tuned))
        delta[key] = tuned.detach().to(device=base.device, dtype=dtype) - base.detach().to(dtype)
    return delta


def apply_delta(pretrained: Mapping[str, Tensor], delta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A new state dict: pretrained + delta on the delta's keys, in each pretrained tensor's dtype and device.

    Keys without a delta, non-float tensors included, are passed through (the same tensor objects). ValueError
    for a delta key absent from ``pretrained``, on a non-float tensor, or of another shape.
    """
    out = dict(pretrained)
    for key, d in delta.items():
        if key not in pretrained:
            raise ValueError(f"delta key {key!r} is not in the pretrained state dict")
        base = pretrained[key]
        if not base.is_floating_point():
            raise ValueError(f"delta key {key!r} targets a non-float tensor ({base.dtype})")
        if base.shape != d.shape:
            raise ValueError(f"delta key {key!r} has shape {tuple(d.shape)}, pretrained {tuple(base.shape)}")
        dtype = _compute_dtype((base, d))
        out[key] = (base.detach().to(dtype) + d.detach().to(device=base.device, dtype=dtype)).to(base.dtype)
    return out
