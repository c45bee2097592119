"""The project's registries. Built-in entries are lazy strings, so listing them imports nothing heavy.

A plugin package registers more through entry points, e.g. in its pyproject.toml::

    [project.entry-points."condu_bench.methods"]
    my-method = "my_package.my_method:MyMethod"
"""

from __future__ import annotations

# Datasets: one spec each (class names and templates are data under condu_bench/datasets/classnames/). Their registry
# is created and filled next to the specs, in the catalog, which imports neither torch, PIL nor this module.
from condu_bench.datasets.catalog import DATASETS
from condu_bench.registry import Registry

__all__ = ["METHODS", "SCENARIOS", "DATASETS"]

METHODS: Registry = Registry("method", "condu_bench.methods")
SCENARIOS: Registry = Registry("scenario", "condu_bench.scenarios")

# Methods: one file each under baselines/ (installed as condu_bench.baselines).
_B = "condu_bench.baselines"
METHODS.register_lazy("zeroshot", f"{_B}.zeroshot:ZeroShot", "Zero-shot CLIP: no training; every accuracy-matrix row is equal.")
METHODS.register_lazy("finetune", f"{_B}.finetune:ContinualFinetune", "Continual fine-tuning of every weight (except logit_scale), task after task.")
METHODS.register_lazy("lwf", f"{_B}.lwf:LwF", "LwF: two-way distillation from the task-start model on the task's images and classes.")
METHODS.register_lazy("zscl", f"{_B}.zscl:ZSCL", "ZSCL: L2 to the task start, distillation from zero-shot CLIP on reference data, weight ensemble.")
METHODS.register_lazy("lwf_vr", f"{_B}.lwf_vr:LwFVR", "LwF-VR: LwF over random token sequences of the vocabulary.")
METHODS.register_lazy("icarl", f"{_B}.icarl:ICaRL", "iCaRL: distillation from zero-shot CLIP on a herded exemplar memory of earlier datasets.")
METHODS.register_lazy("wise_ft", f"{_B}.wise_ft:WiseFT", "WiSE-FT: interpolate the fine-tuned weights with the task's start after every task.")
METHODS.register_lazy("condu", f"{_B}.condu:ConDU", "ConDU: full fine-tuning experts from theta_0, decoupled-unified; routed inference on unseen tasks.")
METHODS.register_lazy("coop", f"{_B}.coop:CoOp", "CoOp: 4 learnable context vectors (\"a photo of a\") before the class name; frozen CLIP.")
METHODS.register_lazy("cocoop", f"{_B}.cocoop:CoCoOp", "CoCoOp: CoOp's context shifted per image by a small meta-net on the image feature.")
METHODS.register_lazy("kgcoop", f"{_B}.kgcoop:KgCoOp", "KgCoOp: CoOp plus lambda * (1 - cos) to the frozen hand-crafted class features (lambda = 8).")
METHODS.register_lazy("clipfit", f"{_B}.clipfit:CLIPFit", "CLIPFit: only the text MLP output biases and the image LayerNorms train, plus 8 * (1 - cos) to the frozen text features.")
METHODS.register_lazy("mergetune", f"{_B}.mergetune:MergeTune", "MergeTune: continued fine-tuning of a finished CoOp/KgCoOp prompt with low-loss paths to it and to zero-shot CLIP.")
METHODS.register_lazy("mergetune_clipfit", f"{_B}.mergetune_clipfit:MergeTuneCLIPFit", "MergeTune on CLIPFit: continued fine-tuning of a finished CLIPFit run's weights with a low-loss path to zero-shot CLIP.")
METHODS.register_lazy("condu_lora", f"{_B}.condu_lora:ConDULoRA", "ConDU with LoRA experts (rank 64) on every MLP of both encoders.")
METHODS.register_lazy("moe_adapters", f"{_B}.moe_adapters:MoEAdapters", "MoE-Adapters: frozen CLIP, adapter experts with per-task noisy top-k routers, autoencoder task selector.")

# Scenarios: builders taking (options dict, seed) and returning a Scenario.
SCENARIOS.register_lazy(
    "synthetic_mtil",
    "condu_bench.scenarios.synthetic:build_synthetic_mtil",
    "MTIL over the embedded synthetic multi-domain world (no downloads).",
)
SCENARIOS.register_lazy("synthetic_b2n", "condu_bench.scenarios.synthetic_b2n:build_synthetic_b2n", "Base-to-novel over the embedded synthetic world: per domain, K shots, train base, evaluate base and novel.")
SCENARIOS.register_lazy("mtil", "condu_bench.scenarios.real:build_mtil", "MTIL over the 11 real datasets (order I/II, zscl or coop splits, few-shot, task-agnostic).")
SCENARIOS.register_lazy("base_to_novel", "condu_bench.scenarios.real:build_base_to_novel", "Base-to-novel: 16 shots over all classes, train base, evaluate base and novel (CoOp splits).")
SCENARIOS.register_lazy("cross_dataset", "condu_bench.scenarios.real:build_cross_dataset", "Train on ImageNet (16 shots), evaluate ImageNet and the other 10 CoOp datasets (Avg-C).")
SCENARIOS.register_lazy("domain_generalisation", "condu_bench.scenarios.real:build_domain_generalisation", "Train on ImageNet, evaluate ImageNet and -V2/-Sketch/-A/-R (Avg-D).")
