"""How a pretrained tiny CLIP sees each synthetic domain before any training: the embedding geometry behind the world's
properties.

CLIP ViT-B/16 typically puts the prompts of one dataset's classes in a narrow cone (cosine 0.7-0.9 between two
classes), an image at a cosine of about 0.3 to its class's prompt, and separates the classes by a top-1 minus top-2
cosine of a few hundredths; at its temperature of 100 that is a logit gap of a few units. Every method that mixes a cross-entropy with a
scale-free restraint (MergeTune's cosine anchor, KgCoOp's L2, ZSCL's weight distance), and ConDU's vote of theta_0
against its experts, depends on these numbers, so ``condu-bench world-check --geometry`` prints them per domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DomainGeometry:
    domain: str
    num_classes: int
    text_cos: float  # mean cosine between two different classes' text features
    image_text_cos: float  # mean cosine of a test image to its own class's text feature
    margin: float  # mean top-1 minus top-2 cosine of a test image over the domain's classes
    accuracy: float  # zero-shot, percent
    temperature: float  # the model's exp(logit_scale), at which it was pretrained and is fine-tuned

    @property
    def logit_gap(self) -> float:
        """``margin`` at the model's own temperature: how confident the zero-shot softmax is."""
        return self.margin * self.temperature

    def smoothed_gap(self, label_smoothing: float) -> float:
        """The top-1 minus top-2 logit gap at which cross-entropy with ``label_smoothing`` over this domain's classes
        is smallest: the most confident a fine-tuned expert is pushed to be (``ln(1 + n (1 - e) / e)``; 3.2 for 6
        classes at the references' 0.2, 6.0 for 100 classes; unbounded without smoothing)."""
        if label_smoothing <= 0:
            return math.inf
        return math.log(1 + self.num_classes * (1 - label_smoothing) / label_smoothing)


@torch.no_grad()
def domain_geometry(model, tokenizer, transform, domain: str, *, n_per_class: int, image_size: int = 32,
                    data_seed: int = 0, style: dict | None = None, batch_size: int = 500) -> DomainGeometry:
    """The geometry of ``domain``'s test split (``n_per_class`` images a class) under ``model``'s zero-shot
    classifier (the domain's templates averaged, as the evaluator builds it)."""
    from condu_bench.models.classifier import image_features, logit_scale, text_classifier
    from condu_bench.synthetic.domains import domain_classnames, domain_templates, make_domain_split

    classnames = domain_classnames(domain)
    classifier = text_classifier(model, tokenizer, classnames, domain_templates(domain))
    n = len(classnames)
    pairwise = classifier @ classifier.t()
    text_cos = float((pairwise.sum() - pairwise.diagonal().sum()) / (n * n - n))
    split = make_domain_split(domain, "test", n_per_class=n_per_class, image_size=image_size, seed=data_seed,
                              style=style)
    own, margins, correct = [], [], 0
    for start in range(0, len(split), batch_size):
        items = [split[i] for i in range(start, min(start + batch_size, len(split)))]
        images = torch.stack([transform(image) for image, _ in items])
        labels = torch.tensor([label for _, label in items])
        cos = image_features(model, images) @ classifier.t()
        top2 = cos.topk(2, dim=1).values
        own.append(cos[torch.arange(len(labels)), labels])
        margins.append(top2[:, 0] - top2[:, 1])
        correct += int((cos.argmax(1) == labels).sum())
    return DomainGeometry(domain, n, text_cos, float(torch.cat(own).mean()), float(torch.cat(margins).mean()),
                          100.0 * correct / len(split), float(logit_scale(model)))


def geometry_table(rows: list[tuple[str, DomainGeometry]], label_smoothing: float) -> str:
    """Markdown table of ``(model tag, geometry)`` rows; the last column is what fine-tuning with
    ``label_smoothing`` drives an expert's logit gap to (:meth:`DomainGeometry.smoothed_gap`)."""
    lines = ["| model | domain | classes | text-text cos | image-own-text cos | top-1 minus top-2 cos | "
             "logit gap at its temperature | temperature | zero-shot % | "
             f"fine-tuned logit gap at label smoothing {label_smoothing:g} (optimum) |",
             "|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tag, g in rows:
        lines.append(f"| {tag} | {g.domain} | {g.num_classes} | {g.text_cos:.2f} | {g.image_text_cos:.2f} | "
                     f"{g.margin:.3f} | {g.logit_gap:.2f} | {g.temperature:.1f} | {g.accuracy:.1f} | "
                     f"{g.smoothed_gap(label_smoothing):.2f} |")
    return "\n".join(lines)


def run_geometry_check(pretrain_seeds: list[int], overrides: list[str], b2n: bool = False) -> str:
    """The geometry table of the default benchmark's (``b2n``: the base-to-novel benchmark's) domains, downstream
    look and test split, for the tiny CLIP pretrained with each seed (``overrides`` apply, e.g.
    ``model.pretrain.init_logit_scale=100``)."""
    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.models.loading import load_model
    from condu_bench.scenarios import synthetic, synthetic_b2n
    from condu_bench.synthetic.world_check import pretrained_tag

    rows, smoothing = [], 0.0
    for pseed in pretrain_seeds:
        tag = pretrained_tag(pseed)
        config = load_config(resolve_benchmark("synthetic_b2n" if b2n else None), [f"model.pretrained={tag}", *overrides])
        options = {**(synthetic_b2n if b2n else synthetic).DEFAULTS, **config.scenario.options}
        loaded = load_model(config.model, progress=config.progress)
        smoothing = config.train.label_smoothing
        for domain in synthetic.checked_domains(options["domains"] if b2n else options["order"]):
            rows.append((tag, domain_geometry(loaded.model, loaded.tokenizer, loaded.eval_transform, domain,
                                              n_per_class=int(options["n_test_per_class"]),
                                              image_size=int(options["image_size"]), data_seed=int(options["data_seed"]),
                                              style=synthetic.checked_style(options["style"]) or None)))
    return geometry_table(rows, smoothing)
