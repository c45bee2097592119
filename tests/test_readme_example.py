"""The README's "Add a method" plugin, extracted verbatim and run, so the documentation cannot rot."""

import re
import sys
from pathlib import Path

import torch
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS

README = Path(__file__).resolve().parents[1] / "README.md"


def example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if b.startswith("# my_methods/l2_anchor.py")]
    return block


def test_readme_plugin_registers_and_runs(tmp_path, monkeypatch):
    package = tmp_path / "my_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "l2_anchor.py").write_text(example_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import my_methods.l2_anchor as plugin

        assert METHODS.get("l2_anchor") is plugin.L2Anchor
        strong = load_config(None, micro_overrides("l2_anchor") + ["method_options.l2_anchor.weight=1000.0"])
        weak = load_config(None, micro_overrides("l2_anchor") + ["method_options.l2_anchor.weight=0.0"])
        drift = {}
        for label, config in (("strong", strong), ("weak", weak)):
            captured = {}

            class Probe(plugin.L2Anchor):
                def after_task(self, task, ctx):
                    captured["distance"] = sum(
                        (p.detach().cpu() - ctx.pretrained_state[n]).norm() ** 2 for n, p in self.trainable_parameters(ctx.model)
                    )

            METHODS._entries["l2_anchor"].target = Probe
            records = run_experiment(config, tmp_path / label, log=lambda *_: None)
            assert records[0]["method"] == "l2_anchor"
            drift[label] = float(captured["distance"])
        # The penalty works: a strong pull keeps the weights closer to theta_0 than no pull.
        assert drift["strong"] < drift["weak"]
    finally:
        METHODS._entries.pop("l2_anchor", None)
        sys.modules.pop("my_methods.l2_anchor", None)
        sys.modules.pop("my_methods", None)


def test_example_config_option_is_strict(tmp_path):
    import pytest

    from condu_bench.config import from_dict
    from condu_bench.errors import UserError

    namespace: dict = {}
    source = example_source().replace('@METHODS.register("l2_anchor", "Fine-tuning plus an L2 pull towards the pretrained weights.")\n', "")
    exec(compile(source, "l2_anchor.py", "exec"), namespace)
    cls = namespace["L2Anchor"]
    assert from_dict(cls.Config, {"weight": 2}).weight == 2.0
    with pytest.raises(UserError, match="unknown key 'wieght'; did you mean 'weight'"):
        from_dict(cls.Config, {"wieght": 2}, "method_options.l2_anchor")
