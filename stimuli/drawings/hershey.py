"""A one-shot drawing corpus rendered offline from the Hershey stroke fonts (Debian's
``hershey-fonts-data``): a category is a character of an alphabet, and its drawings are the
glyph in every font of that alphabet, each font rendered by several "drawers" (a style:
stroke width, slant, aspect, wobble) with smooth per-drawing jitter and affine variation.
They are reference variants, not people's drawings (``human=False``).

The split is by alphabet, never by font, so the "A" of one font cannot teach the "A" of
another held-out one (``ALPHABETS`` fixes it). Glyphs identical to one already used are
dropped, and an evaluation glyph that looks like a background glyph (``LEAK_CORRELATION``)
drops its category, so no evaluation category is a background one in disguise.

Letters: N drawings, S side in pixels, P points, C categories.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from stimuli.cache import TensorCache, seed_from
from stimuli.drawings.corpus import Category, DrawingCorpus, Split
from stimuli.drawings.datasets import CorpusError

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/usr/share/hershey-fonts")
REVISION = 1  # bump when parsing, selection or rendering changes: it keys the cache
EM = 25.0  # Hershey units: glyphs up to this size keep their relative size (o < O)
MARGIN = 0.1  # of the side, on each side
LEAK_CORRELATION = 0.9  # evaluation glyphs this close to a background glyph are leaks
_R = ord("R")

Strokes = tuple[tuple[tuple[int, int], ...], ...]


@dataclass(frozen=True)
class Glyph:
    """One glyph of a .jhf file: ``index`` is its position in the file (the Debian fonts
    put ASCII 32 + index there), ``left``/``right`` its bounds, ``strokes`` its pen-down
    polylines in Hershey units (y down)."""

    index: int
    left: int
    right: int
    strokes: Strokes

    @property
    def vertices(self) -> int:
        """The vertex count the file declares (bounds pair and pen-ups included)."""
        return 1 + sum(len(s) for s in self.strokes) + max(len(self.strokes) - 1, 0)

    def points(self) -> np.ndarray:
        """All vertices, float (P, 2)."""
        return np.array([p for s in self.strokes for p in s], dtype=np.float64).reshape(-1, 2)

    def degenerate(self) -> bool:
        """Empty, a single point, or a speck (a full stop) rather than a shape."""
        pts = self.points()
        if len(np.unique(pts, axis=0)) < 2:
            return True
        return float((pts.max(0) - pts.min(0)).max()) < 4


def parse_jhf(text: str, source: str = "<text>") -> list[Glyph]:
    """Glyphs of a .jhf file: 5-char id, 3-char vertex count, then that many pairs of
    letters offset from 'R' (first the left/right bounds; " R" lifts the pen). A glyph's
    data may wrap onto following lines, so the declared count, not the line, ends it."""
    lines = text.splitlines()
    glyphs: list[Glyph] = []
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        i += 1
        if not line.strip():
            continue
        try:
            count = int(line[5:8])
        except ValueError:
            raise CorpusError(f"{source}:{start}: no vertex count in {line[:8]!r}") from None
        data = line[8:]
        while len(data) < 2 * count and i < len(lines):
            data += lines[i]
            i += 1
        if len(data) < 2 * count or count < 1:
            raise CorpusError(f"{source}:{start}: glyph declares {count} vertices, has fewer")
        pairs = [data[k:k + 2] for k in range(0, 2 * count, 2)]
        strokes: list[tuple[tuple[int, int], ...]] = []
        current: list[tuple[int, int]] = []
        for pair in pairs[1:]:
            if pair == " R":
                if current:
                    strokes.append(tuple(current))
                current = []
            else:
                current.append((ord(pair[0]) - _R, ord(pair[1]) - _R))
        if current:
            strokes.append(tuple(current))
        glyphs.append(Glyph(len(glyphs), ord(pairs[0][0]) - _R, ord(pairs[0][1]) - _R,
                            tuple(strokes)))
    return glyphs


def read_font(name: str, root: Path = DEFAULT_ROOT) -> list[Glyph]:
    """The glyphs of ``root/<name>.jhf``."""
    path = font_path(name, root)
    return parse_jhf(path.read_text(encoding="latin-1"), str(path))


def font_path(name: str, root: Path = DEFAULT_ROOT) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(
            f"Hershey fonts not found at {root}: install the Debian package hershey-fonts-data "
            "(apt-get install hershey-fonts-data) or pass root= to where its .jhf files are")
    path = root / f"{name}.jhf"
    if not path.is_file():
        raise CorpusError(f"Hershey font {path} is missing (package hershey-fonts-data)")
    return path


# --- which glyph is which character -------------------------------------------------------
# A naming function maps (font, file index) to the character's name, or None to skip it.
Naming = Callable[[str, int], "str | None"]


def _latin(font: str, index: int) -> str | None:
    char = chr(32 + index)
    return char if char.isalnum() and char.isascii() else None


def _symbols(font: str, index: int) -> str | None:
    """Every glyph of a symbol font is its own category."""
    return f"{font}-{index:03d}"


def _symbols_among_letters(font: str, index: int) -> str | None:
    """Some symbol fonts fill the letter and digit positions with Latin ones: skip those."""
    return None if chr(32 + index).isalnum() else _symbols(font, index)


def _table(tables: dict[str, dict[str, str]]) -> Naming:
    return lambda font, index: tables[font].get(chr(32 + index))


def _japanese(first: int, stop: int) -> Naming:
    return lambda font, index: f"{index:03d}" if first <= index < stop else None


def _zip(keys: str, letters: str) -> dict[str, str]:
    if len(keys) != len(letters):
        raise ValueError(f"layout {keys!r} and letters {letters!r} differ in length")
    return {k: v for k, v in zip(keys, letters, strict=True) if v != "."}


_GREEK_SYMBOL = _zip(  # greek, timesg: the Symbol-font layout (C = chi, Q = theta)
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "ΑΒΧΔΕΦΓΗΙ.ΚΛΜΝΟΠΘΡΣΤΥ.ΩΞΨΖαβχδεφγηι.κλμνοπθρστυ.ωξψζ")
_GREEK_ALPHABETICAL = _zip(  # greekc, greeks: alphabetical
    "ABCDEFGHIJKLMNOPQRSTUVWXabcdefghijklmnopqrstuvwx",
    "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψω")
_CYRILLIC_PHONETIC = _zip(  # cyrillic: a keyboard-like layout (E repeats I: skipped)
    "ABCDFGHIJKLMNOPQRSTUVWXYZ[]^_`$abcdefghijklmnopqrstuvwxyz{|}~%&",
    "АБЭДФГЖИЧКЛМНОПШРСТЮВЩХУЗЕЪЯЬЦЫабэдйфгжичклмнопшрстювщхузеъяьцы")
_CYRILLIC_ALPHABETICAL = _zip(  # cyrilc_1: alphabetical, А to Щ
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩабвгдежзийклмнопрстуфхцчшщ")

LATIN_FONTS = ("futural", "futuram", "rowmans", "rowmand", "rowmant", "timesr", "timesrb",
               "timesi", "timesib", "cursive", "scripts", "scriptc", "gothiceng", "gothicger",
               "gothicita", "gothgbt", "gothgrt", "gothitt")


@dataclass(frozen=True)
class HersheyAlphabet:
    name: str
    split: Split
    fonts: tuple[str, ...]
    naming: Naming


# The split: every Latin-script and symbol alphabet is background; the Japanese syllabaries,
# the kanji and the astrological signs (scripts unlike anything in background) are
# evaluation. Order matters: a glyph belongs to the first alphabet that uses it.
ALPHABETS: tuple[HersheyAlphabet, ...] = (
    HersheyAlphabet("latin", "background", LATIN_FONTS, _latin),
    HersheyAlphabet("greek", "background", ("greek", "timesg", "greekc", "greeks"), _table({
        "greek": _GREEK_SYMBOL, "timesg": _GREEK_SYMBOL,
        "greekc": _GREEK_ALPHABETICAL, "greeks": _GREEK_ALPHABETICAL})),
    HersheyAlphabet("cyrillic", "background", ("cyrillic", "cyrilc_1"), _table({
        "cyrillic": _CYRILLIC_PHONETIC, "cyrilc_1": _CYRILLIC_ALPHABETICAL})),
    HersheyAlphabet("mathematics", "background", ("mathlow", "mathupp"), _symbols_among_letters),
    HersheyAlphabet("markers", "background", ("markers",), _symbols),
    HersheyAlphabet("meteorology", "background", ("meteorology",), _symbols_among_letters),
    HersheyAlphabet("music", "background", ("music",), _symbols_among_letters),
    HersheyAlphabet("symbolic", "background", ("symbolic",), _symbols),
    HersheyAlphabet("astrology", "evaluation", ("astrology",), _symbols_among_letters),
    HersheyAlphabet("hiragana", "evaluation", ("japanese",), _japanese(32, 112)),
    HersheyAlphabet("katakana", "evaluation", ("japanese",), _japanese(112, 193)),
    HersheyAlphabet("kanji", "evaluation", ("japanese",), _japanese(2, 32)),
)
FONTS: tuple[str, ...] = tuple(dict.fromkeys(f for a in ALPHABETS for f in a.fonts))


@dataclass(frozen=True)
class HersheyCategory:
    category: Category
    glyphs: tuple[tuple[str, Glyph], ...]  # (font, glyph), one per font that draws it


@functools.lru_cache(maxsize=4)
def hershey_categories(root: Path = DEFAULT_ROOT) -> tuple[HersheyCategory, ...]:
    """The categories ``ALPHABETS`` yields: degenerate glyphs and exact repeats of a glyph
    already used (by any alphabet) dropped; then evaluation categories with a glyph equal
    to, or looking like, any glyph of a background font (used or not, punctuation
    included) or of an earlier evaluation category (``LEAK_CORRELATION``)."""
    fonts = {name: read_font(name, root) for name in FONTS}
    reference = {g.strokes: g for a in ALPHABETS if a.split == "background"
                 for font in a.fonts for g in fonts[font] if not g.degenerate()}
    seen: set[Strokes] = set()
    found: list[HersheyCategory] = []
    for alphabet in ALPHABETS:
        members: dict[str, list[tuple[str, Glyph]]] = {}
        for font in alphabet.fonts:
            for glyph in fonts[font]:
                name = alphabet.naming(font, glyph.index)
                if name is None or glyph.degenerate() or glyph.strokes in seen or (
                        alphabet.split == "evaluation" and glyph.strokes in reference):
                    continue
                seen.add(glyph.strokes)
                members.setdefault(name, []).append((font, glyph))
        found += [HersheyCategory(Category(f"{alphabet.name}/{name}", alphabet.name,
                                           alphabet.split), tuple(glyphs))
                  for name, glyphs in members.items()]
    return tuple(_without_lookalikes(found, list(reference.values())))


def _without_lookalikes(found: list[HersheyCategory], reference: list[Glyph],
                        ) -> list[HersheyCategory]:
    """Drop evaluation categories with a glyph correlating above ``LEAK_CORRELATION`` with
    a ``reference`` glyph or a kept evaluation glyph of another category (blurred 24-pixel
    renderings, scaled to fit)."""
    evaluation = [c for c in found if c.category.split == "evaluation"]
    owner = np.array([-1] * len(reference) + [k for k, c in enumerate(evaluation)
                                              for _ in c.glyphs])  # -1: reference
    glyphs = reference + [g for c in evaluation for _, g in c.glyphs]
    flat = np.stack([gaussian_filter(_render(_place(_strokes(g), 24, em=None), 24, 2.5, 2)
                                     .astype(np.float64), 1.0).ravel() for g in glyphs])
    flat -= flat.mean(1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True) + 1e-9
    similar = flat[owner >= 0] @ flat.T > LEAK_CORRELATION  # (evaluation glyphs, all)
    kept = np.zeros(len(evaluation) + 1, dtype=bool)
    kept[-1] = True  # owner -1 indexes the reference
    for k, candidate in enumerate(evaluation):
        others = kept[owner] & (owner != k)
        if similar[owner[owner >= 0] == k][:, others].any():
            log.debug("dropping %s: looks like another glyph", candidate.category.id)
            continue
        kept[k] = True
    drop = {c.category.id for c, keep in zip(evaluation, kept, strict=False) if not keep}
    return [c for c in found if c.category.id not in drop]


# --- rendering ------------------------------------------------------------------------------
def _strokes(glyph: Glyph) -> list[np.ndarray]:
    """Strokes as float (P, 2) arrays centred on the glyph's bounding box."""
    pts = glyph.points()
    centre = (pts.max(0) + pts.min(0)) / 2
    return [np.asarray(s, dtype=np.float64) - centre for s in glyph.strokes]


def _place(strokes: list[np.ndarray], size: int, em: float | None = EM,
           transform: np.ndarray | None = None, shift: np.ndarray | None = None,
           ) -> list[np.ndarray]:
    """Hershey units (centred) to pixels: scaled to fit inside the margin, but never
    beyond ``em`` units per side (so small glyphs stay small), then ``transform`` (2x2)
    and ``shift`` (pixels), kept inside the image."""
    pts = np.concatenate(strokes)
    inner = size * (1 - 2 * MARGIN)
    extent = max(float((pts.max(0) - pts.min(0)).max()), 1e-6)
    scale = inner / max(extent, em or 0.0)
    matrix = scale * (transform if transform is not None else np.eye(2))
    moved = [s @ matrix.T for s in strokes]
    pts = np.concatenate(moved)
    low, high = pts.min(0), pts.max(0)
    fit = min(1.0, (size - 2.0) / max(float((high - low).max()), 1e-6))
    centre = (low + high) / 2
    offset = np.full(2, size / 2) + (shift if shift is not None else 0)
    half = (high - low) * fit / 2
    offset = np.clip(offset, 1 + half, size - 1 - half)
    return [(s - centre) * fit + offset for s in moved]


def _render(strokes: list[np.ndarray], size: int, width: float, supersample: int = 4,
            ) -> np.ndarray:
    """uint8 (S, S), ink 255 on 0: lines with a disc on every vertex (round joins and
    caps, faster than PIL's curved joints) drawn at ``supersample`` x, box-downsampled."""
    big = size * supersample
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    w = max(1, round(width * supersample))
    r = w / 2
    for stroke in strokes:
        pts = (stroke * supersample).tolist()
        if len(pts) > 1:
            draw.line([c for p in pts for c in p], fill=255, width=w)
        for x, y in pts:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(image.reduce(supersample), dtype=np.uint8)


@dataclass(frozen=True)
class _Drawer:
    """A rendering style, fixed across every character a (font, variant) draws."""

    width: float  # pixels at S = 48
    slant: float  # shear
    aspect: float  # log x/y stretch
    wobble: float  # smooth jitter, as a fraction of the glyph's extent

    @classmethod
    def clean(cls) -> _Drawer:
        return cls(width=2.0, slant=0.0, aspect=0.0, wobble=0.0)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> _Drawer:
        return cls(width=float(rng.uniform(1.3, 2.8)), slant=float(rng.normal(0, 0.12)),
                   aspect=float(rng.normal(0, 0.06)), wobble=float(rng.uniform(0.01, 0.035)))


def _jitter(strokes: list[np.ndarray], drawer: _Drawer, rng: np.random.Generator,
            ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """A smooth random displacement field (three plane waves) and a small offset per
    stroke, in Hershey units; returns the strokes, a 2x2 affine and a shift (fractions of
    the side) for ``_place``."""
    pts = np.concatenate(strokes)
    extent = max(float((pts.max(0) - pts.min(0)).max()), 1.0)
    angles = rng.uniform(0, 2 * np.pi, 3)
    directions = np.stack([np.cos(angles), np.sin(angles)], 1)  # (3, 2)
    frequency = rng.uniform(0.5, 1.5, 3) * 2 * np.pi / extent
    phase = rng.uniform(0, 2 * np.pi, 3)
    amplitude = rng.normal(0, drawer.wobble * extent, (3, 2))

    def field(p: np.ndarray) -> np.ndarray:  # (P, 2) -> (P, 2)
        return np.sin((p @ directions.T) * frequency + phase) @ amplitude

    moved = [s + field(s) + rng.normal(0, 0.008 * extent, 2) for s in strokes]
    theta = rng.normal(0, np.radians(5))
    shear = drawer.slant + rng.normal(0, 0.05)
    log_x = drawer.aspect + rng.normal(0, 0.05)
    log_y = -drawer.aspect + rng.normal(0, 0.05)
    zoom = np.exp(rng.normal(0, 0.06))
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    matrix = zoom * rotate @ np.array([[1, -shear], [0, 1]]) @ np.diag(np.exp([log_x, log_y]))
    return moved, matrix, rng.normal(0, 0.03, 2)


def render_glyph(glyph: Glyph, size: int = 48, drawer: _Drawer | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 (S, S): the glyph centred and scaled to fit, clean unless a drawer and a
    generator are given."""
    strokes = _strokes(glyph)
    if drawer is None or rng is None or drawer.wobble == 0:
        return _render(_place(strokes, size), size, 2.0 * size / 48)
    strokes, matrix, shift = _jitter(strokes, drawer, rng)
    width = max(0.8, drawer.width * size / 48)
    return _render(_place(strokes, size, transform=matrix, shift=shift * size), size, width)


def fonts_digest(root: Path = DEFAULT_ROOT) -> str:
    """SHA-256 over the font files the corpus reads (a changed package is a new key)."""
    digest = hashlib.sha256()
    for name in FONTS:
        digest.update(name.encode() + b"\0" + font_path(name, root).read_bytes())
    return digest.hexdigest()


def hershey_corpus(size: int = 48, variants: int = 10, seed: int = 0,
                   root: Path = DEFAULT_ROOT, cache: TensorCache | None = None,
                   alphabets: tuple[str, ...] | None = None) -> DrawingCorpus:
    """Every category of ``hershey_categories`` (or of ``alphabets`` only: the same
    categories and drawings as in the whole corpus) drawn by ``variants`` drawers per
    font: drawer 0 renders the glyph clean, drawers 1.. each with their own style and
    per-drawing jitter; ``drawers`` are ``FONTS.index(font) * variants + variant``.
    Deterministic for a seed; cached in ``cache`` (default: ``TensorCache()``) by the
    options and a digest of the font files."""
    if size < 8 or variants < 1:
        raise ValueError(f"need size >= 8 and variants >= 1, got {size} and {variants}")
    known = [a.name for a in ALPHABETS]
    if alphabets is not None and not set(alphabets) <= set(known):
        raise ValueError(f"unknown alphabets {sorted(set(alphabets) - set(known))}: "
                         f"choose among {known}")
    chosen = tuple(a for a in known if alphabets is None or a in alphabets)
    cache = cache if cache is not None else TensorCache()
    inputs = {"size": size, "variants": variants, "seed": seed, "revision": REVISION,
              "alphabets": chosen, "fonts": fonts_digest(root)}
    stored = cache.load("hershey-corpus", inputs)
    if stored is None:
        stored = _draw_corpus(size, variants, seed, Path(root), chosen)
        cache.save("hershey-corpus", inputs, stored)
    return DrawingCorpus(
        name="hershey", images=stored["images"].numpy(), labels=stored["labels"].numpy(),
        drawers=stored["drawers"].numpy(),
        categories=tuple(Category(i, a, s) for i, a, s in stored["categories"]), human=False)


def _draw_corpus(size: int, variants: int, seed: int, root: Path,
                 alphabets: tuple[str, ...]) -> dict:
    categories = [c for c in hershey_categories(root) if c.category.alphabet in alphabets]
    styles = {(font, v): _Drawer.sample(np.random.default_rng(
        seed_from(seed, "hershey-drawer", font, v))) for font in FONTS
        for v in range(1, variants)}
    images, labels, drawers = [], [], []
    for label, entry in enumerate(categories):
        for font, glyph in entry.glyphs:
            for v in range(variants):
                if v == 0:
                    images.append(render_glyph(glyph, size))
                else:
                    rng = np.random.default_rng(seed_from(seed, "hershey", entry.category.id,
                                                          font, v))
                    images.append(render_glyph(glyph, size, styles[font, v], rng))
                labels.append(label)
                drawers.append(FONTS.index(font) * variants + v)
    log.info("rendered %d Hershey drawings of %d categories", len(images), len(categories))
    return {
        "images": torch.from_numpy(np.stack(images)),  # (N, S, S) uint8
        "labels": torch.tensor(labels, dtype=torch.int64),
        "drawers": torch.tensor(drawers, dtype=torch.int64),
        "categories": [[c.category.id, c.category.alphabet, c.category.split]
                       for c in categories],
    }
