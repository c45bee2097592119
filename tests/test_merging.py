"""ConDU's unify / decouple merge (condu_bench.merging): exact properties, a hand-computed case, mask packing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from condu_bench.merging import (
    Unified,
    add_task,
    apply_delta,
    decouple,
    pack_masks,
    storage_bytes,
    storage_report,
    task_delta,
    unify,
    unpack_masks,
)

SHAPES = {"scalar": (), "bias": (7,), "weight": (3, 5), "conv": (2, 3, 4), "long": (1001,)}


def make_deltas(n_tasks: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Random deltas with exact zeros, entries zero in every task, and sign ties (a zero mean over tasks)."""
    g = torch.Generator().manual_seed(seed)
    deltas = [{k: torch.randn(s, generator=g) for k, s in SHAPES.items()} for _ in range(n_tasks)]
    for k in ("weight", "long"):
        for d in deltas:
            d[k].view(-1)[torch.rand(d[k].numel(), generator=g) < 0.2] = 0.0  # exact zeros
            d[k].view(-1)[:3] = 0.0  # zero in every task
        if n_tasks >= 2:  # ties: the tasks' values cancel exactly at entries 3..5
            deltas[0][k].view(-1)[3:6] = torch.tensor([0.5, -1.0, 2.0])
            deltas[1][k].view(-1)[3:6] = torch.tensor([-0.5, 1.0, -2.0])
            for d in deltas[2:]:
                d[k].view(-1)[3:6] = 0.0
    return deltas


def l1(delta: dict[str, torch.Tensor]) -> float:
    """The reference's L1: mean |.| within each tensor, summed over tensors."""
    return sum(t.abs().mean().item() for t in delta.values())


def assert_signs_kept(reconstructed: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    for k, r in reconstructed.items():
        ok = (r == 0) | (torch.sign(r) == torch.sign(original[k]))
        assert bool(ok.all()), k


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("n_tasks", [2, 3, 5])
def test_sign_preservation(n_tasks):
    deltas = make_deltas(n_tasks)
    unified = unify(deltas)
    assert all(torch.equal(d[k], e[k]) for d, e in zip(deltas, make_deltas(n_tasks)) for k in d)  # inputs untouched
    for i, d in enumerate(deltas):
        assert_signs_kept(decouple(unified, i), d)


@pytest.mark.parametrize("n_tasks", [2, 3, 5])
def test_l1_preservation(n_tasks):
    deltas = make_deltas(n_tasks, seed=1)
    unified = unify(deltas)
    for i, d in enumerate(deltas):
        assert l1(decouple(unified, i)) == pytest.approx(l1(d), rel=1e-5)


def test_one_task_is_reconstructed_exactly():
    (d,) = make_deltas(1, seed=2)
    unified = unify([d])
    assert unified.rescalers == [pytest.approx(1.0, rel=1e-6)]
    rec = decouple(unified, 0)
    for k in d:
        assert torch.allclose(rec[k], d[k], rtol=1e-6, atol=0), k
        assert torch.equal(unified.masks[0][k], d[k] != 0), k


def test_hand_computed_two_tasks():
    d1 = {"w": torch.tensor([1.0, -2.0, 3.0, 0.0])}
    d2 = {"w": torch.tensor([-1.0, -1.0, 1.0, 2.0])}
    # means 0, -1.5, 2, 1 -> signs -1 (zero counts as -1), -1, +1, +1
    unified = unify([d1, d2])
    assert torch.equal(unified.U["w"], torch.tensor([-1.0, -2.0, 3.0, 2.0]))
    assert unified.masks[0]["w"].tolist() == [False, True, True, False]  # 0.0 is in no mask
    assert unified.masks[1]["w"].tolist() == [True, True, True, True]
    # lambda_1 = mean|d1| / mean|M1 U| = 1.5 / 1.25; lambda_2 = 1.25 / 2
    assert unified.rescalers == [pytest.approx(1.2, rel=1e-12), pytest.approx(0.625, rel=1e-12)]
    assert torch.allclose(decouple(unified, 0)["w"], torch.tensor([0.0, -2.4, 3.6, 0.0]))
    assert torch.allclose(decouple(unified, 1)["w"], torch.tensor([-0.625, -1.25, 1.875, 1.25]))


def test_every_tensor_counts_equally_in_the_rescaler():
    # a 4-element tensor and a scalar: lambda sums per-tensor means, whatever the sizes
    d1 = {"a": torch.tensor([1.0, -2.0, 3.0, 0.0]), "b": torch.tensor(0.5)}
    d2 = {"a": torch.tensor([-1.0, -1.0, 1.0, 2.0]), "b": torch.tensor(-0.25)}
    unified = unify([d1, d2])
    assert unified.masks[0]["b"].item() and not unified.masks[1]["b"].item()
    assert unified.rescalers == [pytest.approx((1.5 + 0.5) / (1.25 + 0.5)), pytest.approx((1.25 + 0.25) / 2.0)]


def test_all_zero_delta_gets_rescaler_zero():
    (d,) = make_deltas(1, seed=3)
    zero = {k: torch.zeros_like(v) for k, v in d.items()}
    unified = unify([d, zero])
    assert unified.rescalers[1] == 0.0
    assert all(not m.any() for m in unified.masks[1].values())
    assert all(torch.equal(t, torch.zeros_like(t)) for t in decouple(unified, 1).values())


def test_float64_deltas_stay_float64_and_half_is_computed_in_float32():
    deltas = make_deltas(2, seed=4)
    assert unify([{k: v.double() for k, v in d.items()} for d in deltas]).U["long"].dtype == torch.float64
    assert unify([{k: v.half() for k, v in d.items()} for d in deltas]).U["long"].dtype == torch.float32


def test_mismatched_deltas_raise():
    a, b = make_deltas(2, seed=5)
    with pytest.raises(ValueError, match="'bias'"):
        unify([a, {k: v for k, v in b.items() if k != "bias"}])
    with pytest.raises(ValueError, match="'extra'"):
        unify([a, {**b, "extra": torch.zeros(2)}])
    with pytest.raises(ValueError, match="'weight'"):
        unify([a, {**b, "weight": torch.zeros(5, 3)}])
    with pytest.raises(ValueError, match="'weight'"):
        unify([a, {**b, "weight": torch.zeros(3, 5, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="'conv'"):
        add_task(unify([a]), {**b, "conv": torch.zeros(2, 3)})
    with pytest.raises(ValueError):
        unify([])


# ---------------------------------------------------------------- sessions


def test_add_task_over_three_sessions():
    deltas = make_deltas(3, seed=6)
    unified = None
    for t, d in enumerate(deltas):
        unified = add_task(unified, d)
        assert len(unified.masks) == len(unified.rescalers) == t + 1
        assert_signs_kept(decouple(unified, t), d)
        # earlier tasks went through lossy reconstructions, yet keep their signs and L1
        for i in range(t + 1):
            assert_signs_kept(decouple(unified, i), deltas[i])
            assert l1(decouple(unified, i)) == pytest.approx(l1(deltas[i]), rel=1e-5)


def test_add_task_equals_unify_of_the_reconstructions():
    d1, d2, d3 = make_deltas(3, seed=7)
    before = unify([d1, d2])
    after = add_task(before, d3)
    expected = unify([decouple(before, 0), decouple(before, 1), d3])
    assert after.rescalers == pytest.approx(expected.rescalers, rel=1e-12)
    for k in d1:
        assert torch.equal(after.U[k], expected.U[k])
        for i in range(3):
            assert torch.equal(after.masks[i][k], expected.masks[i][k])
    assert isinstance(add_task(None, d1), Unified)
    assert torch.equal(add_task(None, d1).U["long"], unify([d1]).U["long"])


# ---------------------------------------------------------------- packed masks


PACK_SHAPES = {"one": (1,), "seven": (7,), "nine": (9,), "thousand_one": (1001,), "grid": (3, 3),
               "cube": (2, 5, 7), "scalar": (), "empty": (0,)}


def test_pack_unpack_round_trip():
    g = torch.Generator().manual_seed(8)
    masks = {k: torch.rand(s, generator=g) < 0.5 for k, s in PACK_SHAPES.items()}
    masks["one"] = torch.ones(1, dtype=torch.bool)  # a set bit in a padded byte
    packed = pack_masks(masks)
    for k, bits in packed.items():
        n = math.prod(PACK_SHAPES[k])
        assert bits.dtype == torch.uint8 and bits.numel() == math.ceil(n / 8), k
        assert np.array_equal(bits.numpy(), np.packbits(masks[k].reshape(-1).numpy())), k  # numpy's bit order
    assert storage_bytes(packed) == sum(math.ceil(math.prod(s) / 8) for s in PACK_SHAPES.values())
    unpacked = unpack_masks(packed, {k: masks[k].shape for k in masks})
    for k, m in masks.items():
        assert unpacked[k].dtype == torch.bool and unpacked[k].shape == m.shape and torch.equal(unpacked[k], m), k


def test_packed_masks_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    unified = unify(make_deltas(2, seed=9))
    save_file(pack_masks(unified.masks[1]), tmp_path / "mask.safetensors")
    loaded = unpack_masks(load_file(tmp_path / "mask.safetensors"), {k: u.shape for k, u in unified.U.items()})
    assert all(torch.equal(loaded[k], unified.masks[1][k]) for k in unified.U)


def test_unpack_rejects_wrong_shapes_and_keys():
    packed = pack_masks({"m": torch.ones(9, dtype=torch.bool)})
    with pytest.raises(ValueError, match="'m'"):
        unpack_masks(packed, {"m": (17,)})
    with pytest.raises(ValueError, match="'other'"):
        unpack_masks(packed, {"m": (9,), "other": (1,)})
    with pytest.raises(ValueError, match="'m'"):
        pack_masks({"m": torch.ones(9)})


def test_storage_report():
    unified = unify(make_deltas(3, seed=10))
    n = sum(math.prod(s) for s in SHAPES.values())
    report = storage_report(unified)
    assert report["unified"] == 4 * n
    assert report["masks"] == [sum(math.ceil(math.prod(s) / 8) for s in SHAPES.values())] * 3
    assert report["total"] == report["unified"] + sum(report["masks"])


# ---------------------------------------------------------------- state dicts


def test_task_delta_and_apply_delta_skip_non_float_tensors():
    g = torch.Generator().manual_seed(11)
    pre = {"w": torch.randn(4, 3, generator=g), "h": torch.randn(5, generator=g).half(),
           "step": torch.tensor(3), "ids": torch.arange(4)}
    ft = {"w": pre["w"] + 0.1, "h": pre["h"] - 0.5, "step": torch.tensor(7), "ids": torch.arange(4)}
    delta = task_delta(ft, pre)
    assert set(delta) == {"w", "h"} and delta["h"].dtype == torch.float32
    merged = apply_delta(pre, delta)
    assert torch.allclose(merged["w"], ft["w"]) and torch.equal(merged["h"], ft["h"])
    assert merged["h"].dtype == torch.float16
    assert merged["step"] is pre["step"] and merged["ids"] is pre["ids"]
    assert set(task_delta(ft, pre, keys=["w"])) == {"w"}
    with pytest.raises(ValueError, match="'step'"):
        task_delta(ft, pre, keys=["step"])
    with pytest.raises(ValueError, match="'missing'"):
        task_delta(ft, pre, keys=["missing"])
    with pytest.raises(ValueError, match="'w'"):
        task_delta({**ft, "w": torch.zeros(3, 4)}, pre)
    with pytest.raises(ValueError, match="'step'"):
        apply_delta(pre, {"step": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="'nope'"):
        apply_delta(pre, {"nope": torch.zeros(1)})
