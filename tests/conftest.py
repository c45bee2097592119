"""Shared fixtures. Everything runs on the CPU with 2 threads and tiny models."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(autouse=True, scope="session")
def _cpu_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _decoded_cache_in_tmp(tmp_path_factory):
    """Runs in tests decode evaluation images into a session folder, not the user's cache."""
    from condu_bench.datasets import decoded_cache

    patch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("decoded")
    patch.setattr(decoded_cache, "default_cache_root", lambda: root)
    yield root
    patch.undo()


# The calibrated tiny CLIP (the full pretraining recipe) costs minutes on a fresh machine: only tests marked
# `slow` may ask for it. Other tests use the micro CLIP or a tiny recipe; this guard makes a forgotten marker fail.
_IN_SLOW_TEST = [False]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _IN_SLOW_TEST[0] = "slow" in item.keywords


def pytest_configure(config):
    from condu_bench.synthetic import pretrain

    full_recipe_steps = pretrain.PretrainConfig().steps
    original = pretrain.cached_tiny_clip

    def guarded(cfg=None, *args, **kwargs):
        if not _IN_SLOW_TEST[0] and (cfg is None or cfg.steps == full_recipe_steps):
            raise AssertionError("this test loads the calibrated tiny CLIP (minutes on a fresh machine): mark it "
                                 "@pytest.mark.slow or use the micro CLIP (tests/helpers.py micro_overrides)")
        return original(cfg, *args, **kwargs)

    pretrain.cached_tiny_clip = guarded


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Generated dataset trees, built once per session and only read by the tests that share them.
@pytest.fixture(scope="session")
def zscl_tree(tmp_path_factory):
    import fake_trees as ft

    root = tmp_path_factory.mktemp("zscl")
    return root, ft.build_all(root, "zscl")


@pytest.fixture(scope="session")
def coop_tree(tmp_path_factory):
    import fake_trees as ft

    root = tmp_path_factory.mktemp("coop")
    ft.zscl_mnist(root)  # MTIL on coop splits falls back to zscl for MNIST and CIFAR100
    ft.zscl_cifar100(root)
    return root, ft.build_all(root, "coop")
