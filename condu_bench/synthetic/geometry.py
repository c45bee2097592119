"""How a pretrained tiny CLIP sees each synthetic domain before any training: the embedding geometry behind the world's
properties.

CLIP ViT-B/16 typically puts the prompts of one dataset's classes in a narrow cone (cosine 0.7-0.9 between two
classes), an image at a cosine of about 0.3 to its class's prompt, and separates the classes by a top-1 minus top-2
cosine of a few hundredths; at its temperature of 100 that is a logit gap of a few units. Every method that mixes a cross-entropy with a
scale-free restraint (MergeTune's cosine anchor, KgCoOp's L2, ZSCL's weight distance), and ConDU's vote of theta_0
against its experts, depends on these numbers, so ``condu-bench world-check --geometry`` prints them per domain.

Next to zero-shot it prints a 16-shot linear probe on the frozen image features: how much of a domain's class
information the image encoder carries beyond what zero-shot reads from it. A prompt method trains only the text side
of the cosine classifier over those features, so where the probe barely leads zero-shot, CoOp has little to gain on
Base (the prompt's zero-shot start is a prior a probe lacks, so CoOp can still pass the probe, as on ImageNet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DomainGeometry:
    domain: str
    num_classes: int
    text_cos: float  # mean cosine between two different classes' text features
    image_text_cos: float  # mean cosine of a test image to its own class's text feature
    margin: float  # mean top-1 minus top-2 cosine of a test image over the domain's classes
    accuracy: float  # zero-shot, percent
    temperature: float  # the model's exp(logit_scale), at which it was pretrained and is fine-tuned
    probe_accuracy: float | None = None  # a linear probe on frozen image features of a few training shots, percent
    probe_shots: int = 0  # the training images a class the probe was fitted to (0: no probe)

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


#: the L2 penalties the probe chooses from on held-out shots (CLIP's linear-probe protocol sweeps its C likewise)
PROBE_WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                     max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a multinomial logistic regression with an L2 penalty, fitted by L-BFGS from zero
    (deterministic)."""
    weight = torch.zeros(feats.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(feats @ weight + bias, labels) + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _accuracy(feats: torch.Tensor, labels: torch.Tensor, probe: tuple[torch.Tensor, torch.Tensor]) -> float:
    return 100.0 * float(((feats @ probe[0] + probe[1]).argmax(1) == labels).float().mean())


def linear_probe_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                          test_labels: torch.Tensor, weight_decays: tuple[float, ...] = PROBE_WEIGHT_DECAYS) -> float:
    """Test accuracy (percent) of a linear probe fitted to the training features, its L2 penalty chosen from
    ``weight_decays`` by fitting on every other shot of each class and scoring the rest (the first best wins; with
    one shot a class nothing is held out and the first penalty is used)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    rank = torch.zeros(len(train_labels), dtype=torch.long)  # the shot's position among its class's shots
    for label in train_labels.unique():
        where = (train_labels == label).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    fit, held = rank % 2 == 0, rank % 2 == 1
    if len(weight_decays) > 1 and held.any():
        scores = [_accuracy(train_feats[held], train_labels[held],
                            fit_linear_probe(train_feats[fit], train_labels[fit], num_classes, wd)) for wd in weight_decays]
        weight_decays = (weight_decays[scores.index(max(scores))],)
    return _accuracy(test_feats, test_labels, fit_linear_probe(train_feats, train_labels, num_classes, weight_decays[0]))


def _split_features(model, transform, split, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from condu_bench.models.classifier import image_features

    feats, labels = [], []
    for start in range(0, len(split), batch_size):
        items = [split[i] for i in range(start, min(start + batch_size, len(split)))]
        feats.append(image_features(model, torch.stack([transform(image) for image, _ in items])))
        labels.append(torch.tensor([label for _, label in items]))
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def domain_geometry(model, tokenizer, transform, domain: str, *, n_per_class: int, image_size: int = 32,
                    data_seed: int = 0, style: dict | None = None, batch_size: int = 500,
                    probe_shots: int = 16) -> DomainGeometry:
    """The geometry of ``domain``'s test split (``n_per_class`` images a class) under ``model``'s zero-shot
    classifier (the domain's templates averaged, as the evaluator builds it), and the test accuracy of a linear
    probe fitted to ``probe_shots`` training images a class (0: no probe)."""
    from condu_bench.models.classifier import logit_scale, text_classifier
    from condu_bench.synthetic.domains import domain_classnames, domain_templates, make_domain_split

    classnames = domain_classnames(domain)
    classifier = text_classifier(model, tokenizer, classnames, domain_templates(domain))
    n = len(classnames)
    pairwise = classifier @ classifier.t()
    text_cos = float((pairwise.sum() - pairwise.diagonal().sum()) / (n * n - n))
    split = make_domain_split(domain, "test", n_per_class=n_per_class, image_size=image_size, seed=data_seed,
                              style=style)
    feats, labels = _split_features(model, transform, split, batch_size)
    cos = feats @ classifier.t()
    top2 = cos.topk(2, dim=1).values
    own = cos[torch.arange(len(labels)), labels]
    accuracy = 100.0 * float((cos.argmax(1) == labels).float().mean())
    probe = None
    if probe_shots > 0:
        shots = make_domain_split(domain, "train", n_per_class=probe_shots, image_size=image_size, seed=data_seed,
                                  style=style)
        probe = linear_probe_accuracy(*_split_features(model, transform, shots, batch_size), feats, labels)
    return DomainGeometry(domain, n, text_cos, float(own.mean()), float((top2[:, 0] - top2[:, 1]).mean()), accuracy,
                          float(logit_scale(model)), probe, max(probe_shots, 0))


def geometry_table(rows: list[tuple[str, DomainGeometry]], label_smoothing: float) -> str:
    """Markdown table of ``(model tag, geometry)`` rows; the last column is what fine-tuning with
    ``label_smoothing`` drives an expert's logit gap to (:meth:`DomainGeometry.smoothed_gap`)."""
    shots = sorted({g.probe_shots for _, g in rows if g.probe_accuracy is not None})
    probe_name = f"{'/'.join(map(str, shots))}-shot linear probe %" if shots else "linear probe %"
    lines = ["| model | domain | classes | text-text cos | image-own-text cos | top-1 minus top-2 cos | "
             f"logit gap at its temperature | temperature | zero-shot % | {probe_name} | "
             f"fine-tuned logit gap at label smoothing {label_smoothing:g} (optimum) |",
             "|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tag, g in rows:
        probe = "-" if g.probe_accuracy is None else f"{g.probe_accuracy:.1f}"
        lines.append(f"| {tag} | {g.domain} | {g.num_classes} | {g.text_cos:.2f} | {g.image_text_cos:.2f} | "
                     f"{g.margin:.3f} | {g.logit_gap:.2f} | {g.temperature:.1f} | {g.accuracy:.1f} | {probe} | "
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
