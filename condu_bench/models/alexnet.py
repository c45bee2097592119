"""ImageNet AlexNet's conv5 map, the image features MoE-Adapters' released task selector (DDAS) reads.

The release takes torchvision's ImageNet AlexNet, keeps ``features`` without its last two modules (the ReLU and
max-pool after conv5), flattens the map (256 x 13 x 13 at 224 px) and passes it through a sigmoid before its
autoencoders. Nothing is downloaded here: the weights are read from a file, by default where torchvision caches
them (``$TORCH_HOME/hub/checkpoints``), with pickle code disabled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from condu_bench.errors import UserError

#: torchvision's file name for ``alexnet(weights="IMAGENET1K_V1")``
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"


def default_alexnet_weights() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def read_alexnet_features_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of an AlexNet state dict (.pth/.pt read with ``weights_only``, or .safetensors)."""
    if not path.is_file():
        raise UserError(
            f"ImageNet AlexNet weights not found at {path}. MoE-Adapters' released task selector reads AlexNet's conv5 "
            "features: on a machine with internet run `python -c \"import torchvision; "
            "torchvision.models.alexnet(weights='IMAGENET1K_V1')\"` and copy "
            f"{TORCHVISION_FILE} from its torch hub cache to that path, or set "
            "method_options.moe_adapters.selector_weights=FILE (or selector_features=clip to use CLIP's embeddings)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # not a plain tensor dict: refused rather than unpickled
            raise UserError(f"{path} is not a plain AlexNet state dict readable without pickle code ({error})") from error
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not an AlexNet state dict")
    return {k: v for k, v in state.items() if k.startswith("features.")}


class AlexNetConv5(nn.Module):
    """AlexNet's conv5 map (before any sigmoid), flattened: ``(n, 3, H, W) -> (n, 256 * h * w)``, computed in fp32."""

    def __init__(self, state: dict[str, torch.Tensor]):
        from torchvision.models import alexnet

        super().__init__()
        features = alexnet(weights=None).features
        missing = sorted(f"features.{k}" for k in features.state_dict() if f"features.{k}" not in state)
        if missing:
            raise UserError(f"AlexNet state dict lacks {', '.join(missing)}: expected torchvision's alexnet layout")
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
        self.layers = features[:-2]  # conv5's output, before its ReLU and max-pool
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> AlexNetConv5:
        return super().train(False)  # a frozen extractor: no mode changes (it has no dropout or norm anyway)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # fp32 even inside the run's bf16 autocast: the release's threshold is compared with errors of fp32 features
        with torch.autocast(images.device.type, enabled=False):
            return self.layers(images.float()).flatten(1)


def load_alexnet_conv5(path: str | Path | None = None) -> AlexNetConv5:
    return AlexNetConv5(read_alexnet_features_state(Path(path).expanduser() if path else default_alexnet_weights()))
