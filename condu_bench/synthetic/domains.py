"""The embedded synthetic world: procedural multi-domain image classification + caption data.

Every image is rendered with vectorised numpy from a seeded ``numpy.random.Generator``, so a dataset
is a pure function of ``(domain, split, n_per_class, image_size, seed)``. Geometry is expressed in
normalised image coordinates (0..1), so any ``image_size`` works (the calibrated default is 32).

Domains (the downstream "MTIL" tasks) are shifted from the caption data used for pretraining, as real
downstream datasets are from CLIP's web data: extra noise, lighting changes, distractors and a change of style
per domain (paler colours, finer textures, seven-segment digits that the captions rarely show). The shifts lower
zero-shot accuracy without making a task harder to learn. Since world version 6 every domain has a look of its
own, as real datasets do (light grey shapes on dark grey, colour swatches on grey, grey textures, MNIST-like
digits, dots on paper, a star on a dark board): no domain varies the factor another one classifies, so
fine-tuning on one does not teach invariance to another's classes, and forgetting is what a few-layer model's
shared weights cost, not a conflict built into the data (``look: shared`` in a style brings version 5's world back
for studies). Objects that a domain is about are kept where a few-layer ViT with 8-pixel patches can learn them in
a short fine-tune (centred shapes and digits with little jitter, counted objects one per patch cell).
Version 5 (GENERATOR_VERSION) replaced sklearn's handwritten digits, which the tiny model could not learn
(fine-tuning peaked at 39 %), by printed / bold / seven-segment glyphs with per-sample stroke variants.
"""
from __future__ import annotations

import functools
import zlib
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "DOMAIN_NAMES",
    "GENERATOR_VERSION",
    "WORLD_VERSION",
    "SyntheticImages",
    "CaptionDataset",
    "domain_classnames",
    "domain_templates",
    "make_domain_split",
    "make_caption_dataset",
]

#: Bump whenever caption rendering or the random streams change: it is part of the pretrained-model cache key.
GENERATOR_VERSION = 5
#: Bump whenever the downstream domains' rendering changes: results record it and it is part of their config hash,
#: so results of an older world are never mixed with new ones. 6: every domain in its own look (``_own_look``).
WORLD_VERSION = 6

DOMAIN_NAMES: tuple[str, ...] = ("shapes", "colours", "textures", "digits", "counts", "positions")
#: Domains whose classes combine two attributes the captions name together ("a red circle"), so that a domain has
#: as many classes as a real dataset's base half; not in the default MTIL order, selectable by name.
COMPOSITE_DOMAINS: tuple[str, ...] = ("coloured_shapes", "counted_shapes", "placed_shapes")
#: Domains whose vocabulary the calibrated pretraining does not caption: their tiny CLIP must be pretrained with it
#: (``model.pretrain.letters=<share of the captions>``); selectable by name, in no default list.
OPT_IN_DOMAINS: tuple[str, ...] = ("letters",)
KNOWN_DOMAINS: tuple[str, ...] = DOMAIN_NAMES + COMPOSITE_DOMAINS + OPT_IN_DOMAINS

# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
SHAPES_PLURAL = ("circles", "squares", "triangles", "crosses", "rings", "stars")
# close hues on purpose (red/orange/yellow, blue/purple/pink)
COLOURS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
_HUES = np.array([0.0, 28.0, 54.0, 118.0, 172.0, 222.0, 272.0, 322.0], dtype=np.float32) / 360.0
# background / texture kinds; index 0 (plain) is not a class of the textures domain
TEXTURES = ("plain", "horizontal striped", "vertical striped", "diagonal striped", "checkered",
            "dotted", "speckled")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
_POS_XY = np.array([[0.27, 0.27], [0.73, 0.27], [0.27, 0.73], [0.73, 0.73], [0.5, 0.5]],
                   dtype=np.float32)
NUMBERS = ("one", "two", "three", "four", "five")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")

_CLASSNAMES: dict[str, tuple[str, ...]] = {
    "shapes": SHAPES,
    "colours": COLOURS,
    "textures": TEXTURES[1:],
    "digits": DIGITS,
    "counts": NUMBERS,
    "positions": POSITIONS,
    # shape-major: the base half is circles, squares and triangles in every colour, the novel half the other three
    # shapes in the same colours (the colour-major order leaves colours unseen, and prompt tuning then gains on Novel)
    "coloured_shapes": tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS),
    # shape-major as coloured_shapes: "one circle", "two circles", .., "five stars"
    "counted_shapes": tuple(f"{number} {SHAPES[s] if c == 0 else SHAPES_PLURAL[s]}"
                            for s in range(len(SHAPES)) for c, number in enumerate(NUMBERS)),
    "placed_shapes": tuple(f"{shape} in the {where}" for shape in SHAPES for where in POSITIONS),
    "letters": LETTERS,
}

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "shapes": ("a photo of a {}.", "a {} shape.", "a drawing of a {}.", "a small {}.", "a large {}."),
    "colours": ("a photo of a {} object.", "a {} shape.", "something {}.", "a drawing of a {} object."),
    "textures": ("a {} pattern.", "a {} texture.", "a photo of a {} background.",
                 "something on a {} background."),
    "digits": ("the digit {}.", "a handwritten {}.", "the number {}.", "a photo of the digit {}."),
    "counts": ("a photo of {} objects.", "{} shapes.", "a drawing of {} things."),
    "positions": ("an object in the {}.", "a shape in the {}.", "a photo of something in the {}."),
    "coloured_shapes": ("a photo of a {}.", "a {}.", "a drawing of a {}.", "a small {}.", "a large {}."),
    "counted_shapes": ("a photo of {}.", "{}.", "a drawing of {}."),
    "placed_shapes": ("a {}.", "a photo of a {}.", "a drawing of a {}."),
    "letters": ("the letter {}.", "a capital {}.", "the character {}.", "a photo of the letter {}."),
}


def domain_classnames(name: str) -> list[str]:
    """Human-readable class names of a domain, in label order."""
    _check_domain(name)
    return list(_CLASSNAMES[name])


def domain_templates(name: str) -> list[str]:
    """Prompt templates (each with one ``{}``) of a domain; the first one is the "main" template."""
    _check_domain(name)
    return list(_TEMPLATES[name])


#: the pretraining recipe field (of ``PretrainConfig``) that captions an opt-in domain's vocabulary
_VOCABULARY_FIELD = {"letters": "letters"}


def pretrain_vocabulary(domains: Sequence[str]) -> list[str]:
    """The recipe fields a tiny CLIP must have set in its pretraining to know these domains' class names."""
    return sorted({_VOCABULARY_FIELD[name] for name in domains if name in _VOCABULARY_FIELD})


def captioned_opt_in_domains(recipe: object) -> tuple[str, ...]:
    """The opt-in domains whose vocabulary field is set on ``recipe`` (a ``PretrainConfig``)."""
    return tuple(name for name, field in _VOCABULARY_FIELD.items() if getattr(recipe, field))


def _check_domain(name: str) -> None:
    if name not in _CLASSNAMES:
        raise KeyError(f"unknown synthetic domain {name!r}; known: {', '.join(KNOWN_DOMAINS)}")


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------
class SyntheticImages(torch.utils.data.Dataset):
    """Images held as one uint8 array ``(N, H, W, 3)``; items are ``(PIL RGB image, int label)``.

    ``images`` is exposed for fast paths (tensor conversion without PIL round trips).
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int], classnames: Sequence[str],
                 templates: Sequence[str], name: str = "", transform: Callable | None = None):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError("images must be a uint8 array of shape (N, H, W, 3)")
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.name = name
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]

    def __repr__(self) -> str:
        return (f"SyntheticImages(name={self.name!r}, n={len(self)}, classes={len(self.classnames)}, "
                f"size={self.images.shape[1]})")


class CaptionDataset(torch.utils.data.Dataset):
    """Image-caption pairs for pretraining; items are ``(PIL RGB image, caption str)``."""

    def __init__(self, images: np.ndarray, captions: Sequence[str], transform: Callable | None = None):
        if len(images) != len(captions):
            raise ValueError("images and captions differ in length")
        self.images = images
        self.captions = list(captions)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.captions[i]


# --------------------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------------------
_SPLIT_IDS = {"train": 1, "test": 2, "captions": 3}


def _rng(seed: int, *keys) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF, GENERATOR_VERSION]
    for k in keys:
        words.append(zlib.crc32(str(k).encode()) if not isinstance(k, int) else int(k) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(words))


# 5x7 printed digits (rows top to bottom, "1" = ink); the pretraining captions mostly show this style.
_PRINTED_DIGITS = (
    ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
)
# Seven-segment digits (segments a..g: top, top right, bottom right, bottom, bottom left, top left, middle):
# the downstream "digits" domain shows them often, a style shift from the captions (like MNIST for CLIP).
_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")
_SEGMENT_CELLS = {  # (rows, cols) of each segment in an 8x8 glyph
    "a": ([0], range(2, 6)), "g": ([3], range(2, 6)), "d": ([6], range(2, 6)),
    "f": (range(0, 4), [1]), "b": (range(0, 4), [6]), "e": (range(3, 7), [1]), "c": (range(3, 7), [6]),
}
DIGIT_STYLES = ("printed", "bold", "segment")
_VARIANTS_PER_GLYPH = 24  # per digit and style; every 4th variant is reserved for test splits


def _glyph(digit: int, style: str) -> np.ndarray:
    g = np.zeros((8, 8), np.float32)
    if style == "segment":
        for seg in _SEGMENTS[digit]:
            rows, cols = _SEGMENT_CELLS[seg]
            g[np.ix_(list(rows), list(cols))] = 1.0
        return g
    rows = np.array([[c == "1" for c in row] for row in _PRINTED_DIGITS[digit]], np.float32)
    g[0:7, 1:6] = rows
    if style == "bold":
        g[:, 2:7] = np.maximum(g[:, 2:7], g[:, 1:6])  # strokes one pixel wider
    return g


def _glyph_bank(key: str, glyph: Callable[[int, str], np.ndarray], num_glyphs: int, styles: Sequence[str],
                drop: float, blot: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8x8 glyphs (values 0..1), their class and style index: every (class, style) in ``_VARIANTS_PER_GLYPH``
    variants whose ink is thinned (a share ``drop`` of pixels removed) or thickened (``blot`` beside strokes) at
    random, like different writers."""
    rng = _rng(0, key)
    images, labels, style_index = [], [], []
    for label in range(num_glyphs):
        for s_index, style in enumerate(styles):
            base = glyph(label, style)
            for _ in range(_VARIANTS_PER_GLYPH):
                keep = rng.random(base.shape) > drop
                extra = (rng.random(base.shape) < blot) & (np.roll(base, 1, axis=1) > 0)
                images.append(np.clip(base * keep + extra, 0.0, 1.0) * rng.uniform(0.8, 1.0))
                labels.append(label)
                style_index.append(s_index)
    return np.stack(images).astype(np.float32), np.array(labels, np.int64), np.array(style_index, np.int64)


def _bank_pool(bank: tuple[np.ndarray, np.ndarray, np.ndarray], all_styles: Sequence[str], split: str,
               styles: Sequence[str]) -> np.ndarray:
    """Indices of a glyph bank usable by ``split`` in the given styles: test owns every 4th variant."""
    style_of = bank[2]
    idx = np.arange(len(style_of))
    wanted = np.isin(style_of, [all_styles.index(s) for s in styles])
    test = idx % 4 == 0
    return idx[wanted & (test if split == "test" else ~test)]


@functools.lru_cache(maxsize=1)
def _digit_bank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _glyph_bank("digit-bank", _glyph, 10, DIGIT_STYLES, drop=0.12, blot=0.05)


def _digit_pool(split: str, styles: Sequence[str] = DIGIT_STYLES) -> np.ndarray:
    return _bank_pool(_digit_bank(), DIGIT_STYLES, split, styles)


# 5x7 capital letters in the same grid as the printed digits
_PRINTED_LETTERS = (
    ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),  # a
    ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    ("01110", "10001", "10000", "10000", "10000", "10001", "01110"),
    ("11110", "10001", "10001", "10001", "10001", "10001", "11110"),
    ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),  # e
    ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    ("01110", "10001", "10000", "10111", "10001", "10001", "01111"),
    ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    ("01110", "00100", "00100", "00100", "00100", "00100", "01110"),  # i
    ("00111", "00010", "00010", "00010", "00010", "10010", "01100"),
    ("10001", "10010", "10100", "11000", "10100", "10010", "10001"),
    ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    ("10001", "11011", "10101", "10101", "10001", "10001", "10001"),  # m
    ("10001", "10001", "11001", "10101", "10011", "10001", "10001"),
    ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    ("01110", "10001", "10001", "10001", "10101", "10010", "01101"),  # q
    ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
    ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),  # u
    ("10001", "10001", "10001", "10001", "10001", "01010", "00100"),
    ("10001", "10001", "10001", "10101", "10101", "10101", "01010"),
    ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
    ("10001", "10001", "01010", "00100", "00100", "00100", "00100"),  # y
    ("11111", "00001", "00010", "00100", "01000", "10000", "11111"),
)
#: captions show printed and bold letters and rarely slanted ones; the downstream "letters" domain all three alike
LETTER_STYLES = ("printed", "bold", "italic")


def _letter_glyph(letter: int, style: str) -> np.ndarray:
    g = np.zeros((8, 8), np.float32)
    rows = np.array([[c == "1" for c in row] for row in _PRINTED_LETTERS[letter]], np.float32)
    g[0:7, 1:6] = rows
    if style == "bold":
        g[:, 2:7] = np.maximum(g[:, 2:7], g[:, 1:6])
    elif style == "italic":  # the top rows shifted right by two pixels, the middle ones by one
        for row in range(7):
            g[row] = np.roll(g[row], (6 - row) // 3)
    return g


@functools.lru_cache(maxsize=1)
def _letter_bank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # fewer ink pixels dropped than digits' (0.12): a letter's strokes tell 26 classes apart, not 10
    return _glyph_bank("letter-bank", _letter_glyph, len(LETTERS), LETTER_STYLES, drop=0.04, blot=0.02)


def _letter_pool(split: str, styles: Sequence[str] = LETTER_STYLES) -> np.ndarray:
    return _bank_pool(_letter_bank(), LETTER_STYLES, split, styles)


def _draw_glyphs(labels: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray, num_classes: int,
                 rng: np.random.Generator) -> np.ndarray:
    """For every image a bank index from ``pool`` showing its label (``pool_labels`` are the pool's labels)."""
    drawn = np.empty(len(labels), np.int64)
    for label in range(num_classes):
        m = labels == label
        if m.any():
            cand = pool[pool_labels == label]
            drawn[m] = cand[rng.integers(0, len(cand), int(m.sum()))]
    return drawn


# --------------------------------------------------------------------------------------------------
# Rendering primitives (all vectorised over a batch of images)
# --------------------------------------------------------------------------------------------------
def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
                      np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1)], 0)
    return table[i, np.arange(len(i))].astype(np.float32)


def _grid(S: int):
    c = (np.arange(S, dtype=np.float32) + 0.5) / S
    return c[None, :, None], c[None, None, :]  # yy (1,S,1), xx (1,1,S)


def _soft(level: np.ndarray, r_pix: np.ndarray) -> np.ndarray:
    """Anti-aliased alpha from a level function that is 1 on the boundary, <1 inside."""
    return np.clip((1.0 - level) * r_pix + 0.5, 0.0, 1.0)


def _shape_levels(sid: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if sid == 0:  # circle
        return np.sqrt(u * u + v * v)
    if sid == 1:  # square
        return np.maximum(np.abs(u), np.abs(v)) / 0.8
    if sid == 2:  # triangle, inscribed in the unit circle
        a = np.deg2rad(np.array([-90.0, 30.0, 150.0], dtype=np.float32))
        lv = np.maximum(np.maximum(np.cos(a[0]) * u + np.sin(a[0]) * v, np.cos(a[1]) * u + np.sin(a[1]) * v),
                        np.cos(a[2]) * u + np.sin(a[2]) * v)
        return lv / 0.5
    if sid == 3:  # cross (plus sign)
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au / 0.95, av / 0.34), np.maximum(au / 0.34, av / 0.95))
    if sid == 4:  # ring
        return np.abs(np.sqrt(u * u + v * v) - 0.72) / 0.28
    if sid == 5:  # five-pointed star
        rr = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        return rr / (0.62 + 0.38 * np.cos(5 * phi))
    raise ValueError(sid)


def _object_alpha(kind: np.ndarray, cx, cy, r, rot, S: int, digit_idx=None) -> np.ndarray:
    """Alpha masks (m,S,S) for objects. kind < 6: a shape; 6: the digit bank's glyph ``digit_idx``; 7: the letter
    bank's."""
    yy, xx = _grid(S)
    dx = (xx - cx[:, None, None]) / r[:, None, None]
    dy = (yy - cy[:, None, None]) / r[:, None, None]
    c, s = np.cos(rot)[:, None, None], np.sin(rot)[:, None, None]
    u = c * dx + s * dy
    v = -s * dx + c * dy
    out = np.zeros((len(kind), S, S), dtype=np.float32)
    r_pix = (r * S)[:, None, None]
    for sid in range(8):
        m = kind == sid
        if not m.any():
            continue
        if sid < 6:
            out[m] = _soft(_shape_levels(sid, u[m], v[m]), r_pix[m] * 0.9)
        else:
            bank = (_digit_bank if sid == 6 else _letter_bank)()[0]
            out[m] = _glyph_alpha(bank, digit_idx[m], u[m], v[m])
    return out


def _glyph_alpha(bank: np.ndarray, glyph_idx: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of the bank's 8x8 glyph over the box u,v in [-1,1]; sharpened into an alpha."""
    m = len(glyph_idx)
    pad = np.zeros((m, 10, 10), dtype=np.float32)
    pad[:, 1:9, 1:9] = bank[glyph_idx]
    gx = (u + 1.0) * 4.0 - 0.5 + 1.0  # pixel coordinate in the padded 10x10 grid
    gy = (v + 1.0) * 4.0 - 0.5 + 1.0
    gx = np.clip(gx, 0.0, 8.999)
    gy = np.clip(gy, 0.0, 8.999)
    x0 = np.floor(gx).astype(np.int64)
    y0 = np.floor(gy).astype(np.int64)
    fx, fy = gx - x0, gy - y0
    flat = pad.reshape(-1)
    base = (np.arange(m) * 100)[:, None, None]
    i00 = base + y0 * 10 + x0
    val = (flat[i00] * (1 - fx) * (1 - fy) + flat[i00 + 1] * fx * (1 - fy)
           + flat[i00 + 10] * (1 - fx) * fy + flat[i00 + 11] * fx * fy)
    return np.clip((val - 0.22) * 3.0, 0.0, 1.0).astype(np.float32)


def _texture_level(kind: np.ndarray, period: np.ndarray, phase: np.ndarray, angle_sign: np.ndarray,
                   S: int, rng: np.random.Generator) -> np.ndarray:
    """Mixing level t in [0,1] (m,S,S) between the two background colours."""
    yy, xx = _grid(S)
    m = len(kind)
    t = np.zeros((m, S, S), dtype=np.float32)
    p = period[:, None, None]
    ph = phase[:, None, None] * 2 * np.pi
    sharp = 3.0

    def sq(z):
        return np.clip(np.sin(z) * sharp, -1, 1) * 0.5 + 0.5

    for k in range(1, 7):
        sel = kind == k
        if not sel.any():
            continue
        pk, phk = p[sel], ph[sel]
        if k == 1:
            t[sel] = sq(2 * np.pi * yy / pk + phk) + 0 * xx
        elif k == 2:
            t[sel] = sq(2 * np.pi * xx / pk + phk) + 0 * yy
        elif k == 3:
            sgn = angle_sign[sel][:, None, None]
            t[sel] = sq(2 * np.pi * (xx + sgn * yy) / (pk * 1.41) + phk)
        elif k == 4:
            z = np.sin(np.pi * xx / pk * 1.0 + phk) * np.sin(np.pi * yy / pk + phk)
            t[sel] = np.clip(z * sharp, -1, 1) * 0.5 + 0.5
        elif k == 5:
            fx = np.mod(xx / pk + phase[sel][:, None, None], 1.0) - 0.5
            fy = np.mod(yy / pk + phase[sel][:, None, None] * 0.7, 1.0) - 0.5
            d = np.sqrt(fx * fx + fy * fy)
            t[sel] = np.clip((0.28 - d) * pk * S * 0.9 + 0.5, 0, 1)
        elif k == 6:
            n = int(sel.sum())
            cells = max(S // 3, 2)
            z = (rng.random((n, cells, cells)) > 0.5).astype(np.float32)
            rep = -(-S // cells)
            z = np.repeat(np.repeat(z, rep, axis=1), rep, axis=2)[:, :S, :S]
            t[sel] = z
    return t


def _palette(rng: np.random.Generator, cidx: np.ndarray, hue_jit: float, s_rng, v_rng) -> np.ndarray:
    n = len(cidx)
    h = _HUES[cidx] + rng.uniform(-hue_jit, hue_jit, n).astype(np.float32) / 360.0
    s = rng.uniform(*s_rng, n).astype(np.float32)
    v = rng.uniform(*v_rng, n).astype(np.float32)
    return _hsv_to_rgb(h, s, v)


def _random_colour(rng, n, s_rng=(0.0, 1.0), v_rng=(0.0, 1.0)) -> np.ndarray:
    return _hsv_to_rgb(rng.random(n).astype(np.float32), rng.uniform(*s_rng, n).astype(np.float32),
                       rng.uniform(*v_rng, n).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# Scene description -> pixels
# --------------------------------------------------------------------------------------------------
class _Scene:
    """Per-image parameter arrays for a batch of n images with up to K objects each."""

    def __init__(self, n: int, K: int = 1):
        self.n, self.K = n, K
        self.bg_kind = np.zeros(n, np.int64)
        self.bg_c1 = np.zeros((n, 3), np.float32)
        self.bg_c2 = np.zeros((n, 3), np.float32)
        self.bg_period = np.full(n, 0.2, np.float32)
        self.bg_phase = np.zeros(n, np.float32)
        self.bg_sign = np.ones(n, np.float32)
        self.present = np.zeros((n, K), bool)
        self.kind = np.zeros((n, K), np.int64)
        self.digit = np.zeros((n, K), np.int64)
        self.cx = np.full((n, K), 0.5, np.float32)
        self.cy = np.full((n, K), 0.5, np.float32)
        self.r = np.full((n, K), 0.2, np.float32)
        self.rot = np.zeros((n, K), np.float32)
        self.rgb = np.zeros((n, K, 3), np.float32)
        self.gain = np.ones(n, np.float32)       # lighting multiplier
        self.offset = np.zeros(n, np.float32)    # lighting offset
        self.noise = np.zeros(n, np.float32)     # gaussian pixel noise std


def _render(sc: _Scene, S: int, rng: np.random.Generator, chunk: int = 2048) -> np.ndarray:
    out = np.empty((sc.n, S, S, 3), np.uint8)
    for a in range(0, sc.n, chunk):
        b = min(a + chunk, sc.n)
        sl = slice(a, b)
        t = _texture_level(sc.bg_kind[sl], sc.bg_period[sl], sc.bg_phase[sl], sc.bg_sign[sl], S, rng)
        img = sc.bg_c1[sl, None, None, :] * (1 - t[..., None]) + sc.bg_c2[sl, None, None, :] * t[..., None]
        for k in range(sc.K):
            pres = sc.present[sl, k]
            if not pres.any():
                continue
            rows = np.nonzero(pres)[0]
            g = rows + a
            al = _object_alpha(sc.kind[g, k], sc.cx[g, k], sc.cy[g, k], sc.r[g, k], sc.rot[g, k], S,
                               sc.digit[g, k])[..., None]
            img[rows] = img[rows] * (1 - al) + sc.rgb[g, k][:, None, None, :] * al
        img = img * sc.gain[sl, None, None, None] + sc.offset[sl, None, None, None]
        nz = sc.noise[sl]
        if np.any(nz > 0):
            img = img + rng.standard_normal(img.shape, dtype=np.float32) * nz[:, None, None, None]
        out[sl] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------------
# Parameter samplers shared by domains and captions
# --------------------------------------------------------------------------------------------------
def _sample_background(sc: _Scene, rng, idx: np.ndarray, kinds: np.ndarray, contrast: tuple[float, float],
                       sat: tuple[float, float] = (0.0, 0.6)):
    n = len(idx)
    sc.bg_kind[idx] = kinds
    c1 = _random_colour(rng, n, s_rng=sat, v_rng=(0.15, 0.95))
    other = _random_colour(rng, n, s_rng=sat, v_rng=(0.0, 1.0))
    # second colour = c1 pulled towards a contrasting colour by `contrast`
    away = np.where(c1.mean(1, keepdims=True) > 0.5, other * 0.4, 0.6 + other * 0.4)
    con = rng.uniform(*contrast, n).astype(np.float32)[:, None]
    sc.bg_c1[idx] = c1
    sc.bg_c2[idx] = c1 * (1 - con) + away * con
    sc.bg_period[idx] = rng.uniform(0.14, 0.3, n).astype(np.float32)
    sc.bg_phase[idx] = rng.random(n).astype(np.float32)
    sc.bg_sign[idx] = rng.choice(np.array([-1.0, 1.0], np.float32), n)


def _plain(sc: _Scene, colour: np.ndarray) -> None:
    """A plain background of ``colour`` (one per image, ``(n, 1)`` or ``(n, 3)``)."""
    sc.bg_kind[:] = 0
    sc.bg_c1[:] = colour
    sc.bg_c2[:] = colour


def _fix_visibility(sc: _Scene, idx, k=0):
    lum_o = sc.rgb[idx, k].mean(1)
    lum_b = sc.bg_c1[idx].mean(1)
    close = np.abs(lum_o - lum_b) < 0.2
    j = idx[close]
    if len(j):
        dark = sc.rgb[j, k].mean(1) > 0.45
        sc.bg_c1[j] = np.where(dark[:, None], sc.bg_c1[j] * 0.35, 0.55 + 0.45 * sc.bg_c1[j])
        sc.bg_c2[j] = np.where(dark[:, None], sc.bg_c2[j] * 0.35, 0.55 + 0.45 * sc.bg_c2[j])


# difficulty knobs: pretraining captions are "clean", downstream splits are "shifted"
_CLEAN = dict(noise=(0.0, 0.03), bg_contrast=(0.05, 0.35), gain=(0.9, 1.1), hue_jit=6.0)
_SHIFT_COMMON = dict(noise=(0.0, 0.04), bg_contrast=(0.05, 0.4), gain=(0.85, 1.15), hue_jit=8.0,
                     shape_rot=0.4, shape_jitter=0.06,
                     digit_r=(0.4, 0.46), digit_plain=1.0, digit_jitter=0.03, digit_rot=0.12,
                     colour_sat=(0.25, 0.6), colour_val=(0.45, 0.9),
                     texture_contrast=(0.25, 0.7), texture_period=(0.09, 0.14))
# The calibrated world (WORLD_VERSION 6): every domain in its own look (see _own_look). Calibrated with
# `condu-bench world-check` on tiny CLIPs pretrained with seeds 0-2 and training seeds 0-2.
_OWN_LOOK = dict(_SHIFT_COMMON, look="own", pos_jitter=0.11, shape_r=(0.22, 0.32), distract=0.4, occlude=0.0,
                 count_r=(0.06, 0.1), count_jitter=0.04, digit_style="mnist")
# World version 5, for studies: every domain is objects on shared backgrounds in every colour, so one domain's
# factor is another's nuisance (fine-tuning on colours taught invariance to hue, which the shapes had varied in).
_SHARED_LOOK = dict(_SHIFT_COMMON, look="shared", pos_jitter=0.08, pos_plain=0.5, shape_r=(0.3, 0.4), distract=0.7,
                    occlude=0.5, count_r=(0.08, 0.1), count_jitter=0.02, count_plain=0.15,
                    digit_style="scene", count_style="scene")
#: what a downstream ``style`` may change (``scenario.options.style``); every other knob is the world's calibration
STYLE_KNOBS: dict[str, tuple[str, ...] | type] = {
    "look": ("own", "shared"),  # shared: world version 5's look, where domains vary each other's factors
    "digit_style": ("scene", "mnist"),  # shared look only; mnist: a light grey glyph on plain, nearly black ground
    "count_style": ("scene", "sheet"),  # shared look only; sheet: darker objects of one colour on plain paper
    "count_plain": float, "pos_plain": float,  # shared look only: the share of plain backgrounds
    "texture_period": tuple, "occlude": float, "distract": float,
    "shape_r": tuple, "digit_r": tuple, "colour_sat": tuple, "colour_val": tuple, "texture_contrast": tuple,
}
_SHARED_ONLY = ("digit_style", "count_style", "count_plain", "pos_plain")


def resolve_style(style: dict | None) -> dict:
    """``style`` over the calibrated downstream knobs; ValueError naming a knob or value that does not exist."""
    style = dict(style or {})
    shared = style.get("look") == "shared"
    for key, value in style.items():
        kind = STYLE_KNOBS.get(key)
        if kind is None:
            raise ValueError(f"unknown style knob {key!r}; known: {', '.join(STYLE_KNOBS)}")
        if isinstance(kind, tuple) and value not in kind:
            raise ValueError(f"style knob {key}={value!r}: one of {', '.join(kind)}")
        if kind is float and not isinstance(value, (int, float)):
            raise ValueError(f"style knob {key} takes a number, not {value!r}")
        if kind is tuple:
            if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
                raise ValueError(f"style knob {key} takes a [low, high] range, not {value!r}")
            style[key] = tuple(float(v) for v in value)
        if key in _SHARED_ONLY and not shared:
            raise ValueError(f"style knob {key} changes the shared look only (set look: shared); in the own look "
                             "every domain's background and ink are fixed")
    return {**(_SHARED_LOOK if shared else _OWN_LOOK), **style}


def _lighting(sc: _Scene, rng, idx, knobs):
    n = len(idx)
    sc.gain[idx] = rng.uniform(*knobs["gain"], n)
    sc.offset[idx] = rng.uniform(-0.06, 0.06, n)
    sc.noise[idx] = rng.uniform(*knobs["noise"], n)


def _bg_kinds(rng, n, p_plain=0.4):
    k = rng.integers(1, 7, n)
    return np.where(rng.random(n) < p_plain, 0, k)


# --------------------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------------------
def _domain_scene(name: str, labels: np.ndarray, rng: np.random.Generator, knobs: dict) -> _Scene:
    n = len(labels)
    idx = np.arange(n)
    if name in ("counts", "counted_shapes"):
        sc = _Scene(n, K=5)
    elif name == "colours":
        sc = _Scene(n, K=2)
    else:
        sc = _Scene(n, K=1)
    con = knobs["bg_contrast"]
    hj = knobs["hue_jit"]
    if name == "shapes":
        _sample_background(sc, rng, idx, _bg_kinds(rng, n), con)
        sc.present[:, 0] = True
        sc.kind[:, 0] = labels
        sc.r[:, 0] = rng.uniform(*knobs.get("shape_r", (0.15, 0.3)), n)
        jitter = knobs.get("shape_jitter", 0.5)  # the centre's range around the middle, within the image
        sc.cx[:, 0] = rng.uniform(np.maximum(sc.r[:, 0], 0.5 - jitter), np.minimum(1 - sc.r[:, 0], 0.5 + jitter))
        sc.cy[:, 0] = rng.uniform(np.maximum(sc.r[:, 0], 0.5 - jitter), np.minimum(1 - sc.r[:, 0], 0.5 + jitter))
        sc.rot[:, 0] = rng.uniform(0, knobs.get("shape_rot", 2 * np.pi), n)
        sc.rgb[:, 0] = _palette(rng, rng.integers(0, 8, n), hj, (0.4, 1.0), (0.5, 1.0))
        _fix_visibility(sc, idx)
    elif name == "colours":
        _sample_background(sc, rng, idx, _bg_kinds(rng, n), con, sat=(0.0, 0.35))
        sc.present[:, 0] = True
        sc.kind[:, 0] = rng.integers(0, 6, n)
        sc.r[:, 0] = rng.uniform(0.18, 0.32, n)
        sc.cx[:, 0] = rng.uniform(0.3, 0.7, n)
        sc.cy[:, 0] = rng.uniform(0.3, 0.7, n)
        sc.rot[:, 0] = rng.uniform(0, 2 * np.pi, n)
        # downstream colours are paler than the captions' (a style shift zero-shot pays for, fine-tuning learns)
        sc.rgb[:, 0] = _palette(rng, labels, hj + 4, knobs.get("colour_sat", (0.45, 1.0)), knobs.get("colour_val", (0.5, 1.0)))
        _fix_visibility(sc, idx)
        # a small distractor of another colour in a corner, half of the time
        d = rng.random(n) < knobs.get("distract", 0.5)
        sc.present[:, 1] = d
        sc.kind[:, 1] = rng.integers(0, 6, n)
        sc.r[:, 1] = rng.uniform(0.07, 0.11, n)
        corner = rng.integers(0, 4, n)
        sc.cx[:, 1] = np.where(corner % 2 == 0, 0.12, 0.88)
        sc.cy[:, 1] = np.where(corner // 2 == 0, 0.12, 0.88)
        sc.rgb[:, 1] = _palette(rng, (labels + rng.integers(1, 8, n)) % 8, hj, (0.5, 1.0), (0.5, 1.0))
    elif name == "textures":
        _sample_background(sc, rng, idx, labels + 1, knobs.get("texture_contrast", (0.3, 0.9)), sat=(0.0, 0.8))
        # downstream textures are finer than the captions' (0.14-0.3 of the image per period): a style shift
        sc.bg_period[idx] = rng.uniform(*knobs.get("texture_period", (0.14, 0.3)), n).astype(np.float32)
        # an occluding object a third of the time
        sc.present[:, 0] = rng.random(n) < knobs.get("occlude", 0.33)
        sc.kind[:, 0] = rng.integers(0, 6, n)
        sc.r[:, 0] = rng.uniform(0.1, 0.2, n)
        sc.cx[:, 0] = rng.uniform(0.25, 0.75, n)
        sc.cy[:, 0] = rng.uniform(0.25, 0.75, n)
        sc.rgb[:, 0] = _palette(rng, rng.integers(0, 8, n), hj, (0.5, 1.0), (0.5, 1.0))
    elif name == "digits":
        _sample_background(sc, rng, idx, _bg_kinds(rng, n, p_plain=knobs.get("digit_plain", 0.6)), (0.05, 0.3))
        pool = _digit_pool("test" if knobs.get("split") == "test" else "train")
        jitter, tilt = knobs.get("digit_jitter", 0.1), knobs.get("digit_rot", 0.3)
        _place_glyph(sc, rng, idx, 6, _draw_glyphs(labels, pool, _digit_bank()[1][pool], 10, rng),
                     knobs.get("digit_r", (0.3, 0.42)), (0.5 - jitter, 0.5 + jitter), tilt, hj)
    elif name in ("counts", "counted_shapes"):  # counted_shapes: the objects' kind is part of the class
        _sample_background(sc, rng, idx, _bg_kinds(rng, n, p_plain=knobs.get("count_plain", 0.4)), con)
        if name == "counts":
            _place_counted(sc, rng, idx, labels + 1, r_rng=knobs["count_r"], jitter=knobs["count_jitter"])
            same = rng.random(n) < 0.5
            base_shape = rng.integers(0, 6, n)
            sc.kind[:] = np.where(same[:, None], base_shape[:, None], rng.integers(0, 6, (n, 5)))
        else:
            # as large as objects can be without touching their neighbours' cells (counts' own look draws 0.06-0.1)
            _place_counted(sc, rng, idx, labels % len(NUMBERS) + 1, r_rng=(0.08, 0.1), jitter=knobs["count_jitter"])
            sc.kind[:] = (labels // len(NUMBERS))[:, None]
        col = rng.integers(0, 8, n)
        for k in range(5):
            sc.rgb[:, k] = _palette(rng, col, hj, (0.5, 1.0), (0.6, 1.0))
        _fix_visibility(sc, idx)
    elif name in ("positions", "placed_shapes"):  # placed_shapes: the object's kind is part of the class
        _sample_background(sc, rng, idx, _bg_kinds(rng, n, p_plain=knobs.get("pos_plain", 0.4)), con)
        if name == "positions":
            where, kind = labels, rng.integers(0, 6, n)
        else:
            where, kind = labels % len(POSITIONS), labels // len(POSITIONS)
        sc.present[:, 0] = True
        sc.kind[:, 0] = kind
        sc.r[:, 0] = rng.uniform(*knobs.get("pos_r", (0.09, 0.17)), n)
        jit = knobs.get("pos_jitter", 0.12)
        sc.cx[:, 0] = _POS_XY[where, 0] + rng.uniform(-jit, jit, n)
        sc.cy[:, 0] = _POS_XY[where, 1] + rng.uniform(-jit, jit, n)
        sc.rot[:, 0] = rng.uniform(0, 2 * np.pi, n)
        sc.rgb[:, 0] = _palette(rng, rng.integers(0, 8, n), hj, (0.4, 1.0), (0.5, 1.0))
        _fix_visibility(sc, idx)
    elif name == "letters":  # one capital letter, in any of the bank's styles (the captions rarely show italic)
        _sample_background(sc, rng, idx, _bg_kinds(rng, n, p_plain=0.6), (0.05, 0.3))
        pool = _letter_pool("test" if knobs.get("split") == "test" else "train")
        _place_glyph(sc, rng, idx, 7, _draw_glyphs(labels, pool, _letter_bank()[1][pool], len(LETTERS), rng),
                     (0.38, 0.46), (0.42, 0.58), 0.25, hj)
    elif name == "coloured_shapes":  # one object, its shape and colour the class, on a pale background
        _sample_background(sc, rng, idx, _bg_kinds(rng, n), con, sat=(0.0, 0.3))
        sc.present[:, 0] = True
        sc.kind[:, 0] = labels // len(COLOURS)
        sc.r[:, 0] = rng.uniform(0.22, 0.34, n)
        sc.cx[:, 0] = rng.uniform(0.35, 0.65, n)
        sc.cy[:, 0] = rng.uniform(0.35, 0.65, n)
        sc.rot[:, 0] = rng.uniform(0, 2 * np.pi, n)
        sc.rgb[:, 0] = _palette(rng, labels % len(COLOURS), hj, (0.5, 1.0), (0.55, 1.0))
        _fix_visibility(sc, idx)
    else:  # pragma: no cover - guarded by _check_domain
        raise KeyError(name)
    if name == "digits" and knobs.get("digit_style") == "mnist":
        _plain(sc, rng.uniform(0.0, 0.12, n).astype(np.float32)[:, None])
        sc.rgb[:, 0] = rng.uniform(0.75, 1.0, n).astype(np.float32)[:, None]
    if name == "counts" and knobs.get("count_style") == "sheet":
        _plain(sc, rng.uniform(0.85, 1.0, n).astype(np.float32)[:, None])
        colour = rng.integers(0, 8, n)
        for k in range(5):
            sc.rgb[:, k] = _palette(rng, colour, hj, (0.6, 1.0), (0.3, 0.65))
    if knobs["look"] == "own":
        _own_look(name, sc, rng)
    _lighting(sc, rng, idx, knobs)
    return sc


def _own_look(name: str, sc: _Scene, rng: np.random.Generator) -> None:
    """Every domain in a look of its own, as real datasets are (MNIST's grey digits, DTD's textures, EuroSAT's
    tiles): the factors that other domains classify (shape, hue, background pattern) are held fixed within a domain,
    so fine-tuning on one domain does not teach invariance to another's classes. Measured on the tiny CLIP
    (pretraining seed 0, lr 1.5e-4): with shapes in every hue, training on colours took them from 70 % to 25 %; in
    light grey, from 90 % to 76 %. Digits take their MNIST-like look from ``digit_style: mnist``."""
    n = sc.n

    def grey(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n).astype(np.float32)[:, None]

    if name == "shapes":  # light grey shapes on dark grey
        _plain(sc, grey(0.1, 0.3))
        sc.rgb[:, 0] = grey(0.85, 1.0)
    elif name == "colours":  # colour swatches (and a small one of another colour) on grey
        _plain(sc, grey(0.4, 0.6))
        sc.kind[:, :2] = 1
        sc.rot[:, :2] = 0.0
        sc.r[:, 0] = rng.uniform(0.3, 0.38, n)
        sc.cx[:, 0] = 0.5
        sc.cy[:, 0] = 0.5
    elif name == "textures":  # grey patterns
        sc.bg_c1[:] = sc.bg_c1.mean(1, keepdims=True)
        sc.bg_c2[:] = sc.bg_c2.mean(1, keepdims=True)
    elif name in ("counts", "counted_shapes"):  # dark grey dots (counted_shapes: its class's shapes) on paper
        _plain(sc, grey(0.85, 1.0))
        if name == "counts":  # counted_shapes keeps its class's shape
            sc.kind[:] = 0
        sc.rgb[:] = grey(0.05, 0.25)[:, None, :]
    elif name == "letters":  # dark ink on paper
        _plain(sc, grey(0.8, 1.0))
        sc.rgb[:, 0] = grey(0.0, 0.3)
    elif name in ("positions", "placed_shapes"):  # a yellow star (placed_shapes: its class's shape) on dark blue
        hue, sat = np.full(n, 0.6, np.float32), np.full(n, 0.6, np.float32)
        _plain(sc, _hsv_to_rgb(hue, sat, rng.uniform(0.2, 0.35, n).astype(np.float32)))
        if name == "positions":
            sc.kind[:, 0] = 5
        sc.rgb[:, 0] = _hsv_to_rgb(np.full(n, 0.15, np.float32), np.full(n, 0.7, np.float32), np.ones(n, np.float32))


def _place_glyph(sc: _Scene, rng: np.random.Generator, idx: np.ndarray, kind: int, glyphs: np.ndarray,
                 r_rng: tuple[float, float], centre_rng: tuple[float, float], tilt: float, hue_jit: float,
                 colours: np.ndarray | None = None) -> None:
    """One glyph per image ``idx`` as its first object (``kind`` 6: the digit bank's, 7: the letter bank's; ``glyphs``
    the bank indices): radius, centre (on both axes) and tilt drawn in that order, then a strong colour
    (``colours``' palette indices, or drawn last when None). Digits and letters, in captions and domains, share it."""
    m = len(idx)
    sc.present[idx, 0] = True
    sc.kind[idx, 0] = kind
    sc.digit[idx, 0] = glyphs
    sc.r[idx, 0] = rng.uniform(*r_rng, m)
    sc.cx[idx, 0] = rng.uniform(*centre_rng, m)
    sc.cy[idx, 0] = rng.uniform(*centre_rng, m)
    sc.rot[idx, 0] = rng.uniform(-tilt, tilt, m)
    sc.rgb[idx, 0] = _palette(rng, rng.integers(0, 8, m) if colours is None else colours, hue_jit, (0.3, 1.0), (0.6, 1.0))
    _fix_visibility(sc, idx)


def _place_counted(sc: _Scene, rng, idx, cnt, r_rng, jitter=0.02):
    """Place cnt[i] non-overlapping small objects per image in distinct cells of a 4x4 grid."""
    n = len(idx)
    # one object per cell of the 4x4 grid (the tiny ViT's patch grid at any image size): counting what is there
    # is then learnable by a few-layer ViT, as counting is by CLIP at its scale
    cells = np.argsort(rng.random((n, 16)), axis=1)[:, :5]
    cxs = (cells % 4 + 0.5) / 4.0 + rng.uniform(-jitter, jitter, (n, 5))
    cys = (cells // 4 + 0.5) / 4.0 + rng.uniform(-jitter, jitter, (n, 5))
    sc.present[idx] = np.arange(5)[None, :] < cnt[:, None]
    sc.cx[idx] = cxs
    sc.cy[idx] = cys
    sc.r[idx] = rng.uniform(*r_rng, n)[:, None] * rng.uniform(0.85, 1.15, (n, 5))
    sc.rot[idx] = rng.uniform(0, 2 * np.pi, (n, 5))


def make_domain_split(name: str, split: str, *, n_per_class: int, image_size: int = 32,
                      seed: int = 0, style: dict | None = None) -> SyntheticImages:
    """A class-balanced, shuffled split of one domain; deterministic in all its arguments.

    Train and test use different random streams (and, for digits, disjoint variants of the glyphs). ``style``
    overrides downstream knobs (:data:`STYLE_KNOBS`) to try other worlds without touching the pretraining captions;
    the default is the calibrated world.
    """
    _check_domain(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if n_per_class < 1 or image_size < 8:
        raise ValueError("n_per_class must be >= 1 and image_size >= 8")
    rng = _rng(seed, "domain", name, _SPLIT_IDS[split], n_per_class, image_size)
    classes = _CLASSNAMES[name]
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    labels = labels[rng.permutation(len(labels))]
    knobs = dict(resolve_style(style), split=split)
    sc = _domain_scene(name, labels, rng, knobs)
    images = _render(sc, image_size, rng)
    return SyntheticImages(images, labels.tolist(), classes, _TEMPLATES[name], name=f"{name}/{split}")


# --------------------------------------------------------------------------------------------------
# Captions (pretraining data)
# --------------------------------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption_dataset(n: int, *, image_size: int = 32, seed: int = 0, letters: float = 0.0) -> CaptionDataset:
    """``n`` (image, caption) pairs of compositional scenes, e.g.
    "a small red triangle in the top left on a striped background" (attributes sometimes omitted).

    The scene mix covers every domain's concepts (single objects, counted objects, printed digits,
    full-image textures) on cleaner images than the downstream splits. ``letters`` is the share of pairs that show
    a captioned capital letter ("the letter k"), the vocabulary of the opt-in ``letters`` domain; at 0 (the
    calibrated recipe) the pairs are exactly those of the worlds before letters existed.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if not 0.0 <= letters < 1.0:
        raise ValueError(f"letters is a share of the caption pairs in [0, 1), got {letters}")
    n_letters = int(round(n * letters))
    if n_letters == 0:
        return _scene_captions(n, image_size=image_size, seed=seed)
    scenes = _scene_captions(n - n_letters, image_size=image_size, seed=seed)
    glyphs = _letter_captions(n_letters, image_size=image_size, seed=seed)
    return CaptionDataset(np.concatenate([scenes.images, glyphs.images]), scenes.captions + glyphs.captions)


def _letter_captions(n: int, *, image_size: int, seed: int) -> CaptionDataset:
    """``n`` captioned capital letters ("the letter k in red on a dotted background"), mostly printed and bold."""
    rng = _rng(seed, "letter-captions", n, image_size)
    sc = _Scene(n, K=1)
    idx = np.arange(n)
    knobs = _CLEAN
    _sample_background(sc, rng, idx, _bg_kinds(rng, n, p_plain=0.45), knobs["bg_contrast"])
    # printed and bold three times as often as italic, as digits' captions rarely show seven segments
    pool = np.concatenate([_letter_pool("train", ("printed", "bold"))] * 3 + [_letter_pool("train", ("italic",))])
    glyph = pool[rng.integers(0, len(pool), n)]
    letter = _letter_bank()[1][glyph]
    col = rng.integers(0, 8, n)
    _place_glyph(sc, rng, idx, 7, glyph, (0.4, 0.48), (0.44, 0.56), 0.15, knobs["hue_jit"], colours=col)
    _lighting(sc, rng, idx, knobs)
    images = _render(sc, image_size, rng)
    u = rng.random((n, 3))
    forms = ("the letter {}", "a capital {}", "the character {}", "a letter {}")
    captions = []
    for i in range(n):
        body = forms[int(u[i, 0] * len(forms))].format(LETTERS[letter[i]])
        if u[i, 1] < 0.3:
            body += f" in {COLOURS[col[i]]}"
        if u[i, 2] < 0.45:
            body += f" on a {TEXTURES[int(sc.bg_kind[i])]} background"
        captions.append(body + ".")
    return CaptionDataset(images, captions)


def _scene_captions(n: int, *, image_size: int, seed: int) -> CaptionDataset:
    """The calibrated caption mix (see :func:`make_caption_dataset`)."""
    rng = _rng(seed, "captions", n, image_size)
    # scene types: 0 single object, 1 counted objects, 2 digit, 3 texture
    stype = rng.choice(4, size=n, p=[0.45, 0.15, 0.25, 0.15])
    sc = _Scene(n, K=5)
    idx_all = np.arange(n)
    knobs = _CLEAN
    _sample_background(sc, rng, idx_all, _bg_kinds(rng, n, p_plain=0.45), knobs["bg_contrast"])
    col = rng.integers(0, 8, n)
    shape = rng.integers(0, 6, n)
    pos = rng.integers(0, 6, n)  # 5 = anywhere (not captioned)
    r = rng.uniform(0.1, 0.32, n)
    cnt = rng.integers(1, 6, n)
    # captions show mostly printed and bold digits; seven-segment ones are rare (1 in 7)
    digit_pool = np.concatenate([_digit_pool("train", ("printed", "bold"))] * 3 + [_digit_pool("train", ("segment",))])
    digit_idx = digit_pool[rng.integers(0, len(digit_pool), n)]
    digit_lbl = _digit_bank()[1][digit_idx]
    tex_kind = rng.integers(1, 7, n)

    # --- single objects
    i0 = idx_all[stype == 0]
    sc.present[i0, 0] = True
    sc.kind[i0, 0] = shape[i0]
    sc.r[i0, 0] = r[i0]
    rr = np.minimum(r[i0], 0.2)
    anywhere = pos[i0] == 5
    p5 = np.minimum(pos[i0], 4)
    sc.cx[i0, 0] = np.where(anywhere, rng.uniform(r[i0], 1 - r[i0]), _POS_XY[p5, 0] + rng.uniform(-0.08, 0.08, len(i0)))
    sc.cy[i0, 0] = np.where(anywhere, rng.uniform(r[i0], 1 - r[i0]), _POS_XY[p5, 1] + rng.uniform(-0.08, 0.08, len(i0)))
    sc.r[i0, 0] = np.where(anywhere, r[i0], rr)
    sc.rot[i0, 0] = rng.uniform(0, 2 * np.pi, len(i0))
    sc.rgb[i0, 0] = _palette(rng, col[i0], knobs["hue_jit"], (0.55, 1.0), (0.6, 1.0))
    _fix_visibility(sc, i0)
    # --- counted objects
    i1 = idx_all[stype == 1]
    _place_counted(sc, rng, i1, cnt[i1], r_rng=(0.08, 0.1))
    sc.kind[i1] = shape[i1][:, None]
    for k in range(5):
        sc.rgb[i1, k] = _palette(rng, col[i1], knobs["hue_jit"], (0.55, 1.0), (0.6, 1.0))
    _fix_visibility(sc, i1)
    # --- digits
    i2 = idx_all[stype == 2]
    _place_glyph(sc, rng, i2, 6, digit_idx[i2], (0.34, 0.44), (0.44, 0.56), 0.15, knobs["hue_jit"], colours=col[i2])
    # --- textures
    i3 = idx_all[stype == 3]
    _sample_background(sc, rng, i3, tex_kind[i3], (0.4, 0.9), sat=(0.0, 0.8))
    _lighting(sc, rng, idx_all, knobs)

    images = _render(sc, image_size, rng)

    # --- captions
    u = rng.random((n, 8))
    prefixes = ("", "", "", "a photo of ", "a drawing of ", "an image of ")
    pre_i = rng.integers(0, len(prefixes), n)
    r_final = sc.r[:, 0]
    caps: list[str] = []
    for i in range(n):
        t = stype[i]
        bgk = int(sc.bg_kind[i])
        bg = f" on a {TEXTURES[bgk]} background" if u[i, 5] < 0.45 else ""
        if t == 0:
            words = []
            if u[i, 0] < 0.4:
                if r_final[i] >= 0.22:
                    words.append("large")
                elif r_final[i] <= 0.15:
                    words.append("small")
            if u[i, 1] < 0.75:
                words.append(COLOURS[col[i]])
            words.append(SHAPES[shape[i]] if u[i, 2] < 0.8 else ("shape" if u[i, 3] < 0.5 else "object"))
            phrase = " ".join(words)
            where = f" in the {POSITIONS[pos[i]]}" if pos[i] < 5 and u[i, 4] < 0.9 else ""
            body = f"{_article(phrase)} {phrase}{where}{bg}"
        elif t == 1:
            c = int(cnt[i])
            if u[i, 2] < 0.6:
                noun = SHAPES[shape[i]] if c == 1 else SHAPES_PLURAL[shape[i]]
            else:
                noun = ("shape", "object", "thing")[int(u[i, 3] * 3)] + ("" if c == 1 else "s")
            colw = f"{COLOURS[col[i]]} " if u[i, 1] < 0.6 else ""
            body = f"{NUMBERS[c - 1]} {colw}{noun}{bg}"
        elif t == 2:
            d = DIGITS[digit_lbl[i]]
            colw = f" in {COLOURS[col[i]]}" if u[i, 1] < 0.3 else ""
            form = ("the digit {}", "a handwritten {}", "the number {}", "a handwritten digit {}")[int(u[i, 2] * 4)]
            body = form.format(d) + colw + bg
        else:
            tk = TEXTURES[tex_kind[i]]
            form = ("a {} pattern", "a {} texture", "a {} background", "a {} surface")[int(u[i, 2] * 4)]
            body = form.format(tk)
        if t in (0, 1) and body.startswith(("a ", "an ")) and pre_i[i] >= 3:
            body = prefixes[pre_i[i]] + body
        elif t == 1 and pre_i[i] >= 3:
            body = prefixes[pre_i[i]] + body
        caps.append(body + ".")
    return CaptionDataset(images, caps)
