"""The one-shot drawing corpora: the Hershey reference corpus (parsing, split by alphabet,
counts, determinism, variants) and the Omniglot and QuickDraw-FS loaders on tiny fixtures."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stimuli.cache import TensorCache
from stimuli.drawings.datasets import CorpusError, omniglot_corpus, quickdraw_fs_corpus
from stimuli.drawings.hershey import (
    ALPHABETS,
    DEFAULT_ROOT,
    LATIN_FONTS,
    hershey_categories,
    hershey_corpus,
    parse_jhf,
    read_font,
    render_glyph,
)

# CI installs hershey-fonts-data (.ci/run): there a missing package fails instead.
needs_hershey = pytest.mark.skipif(
    not DEFAULT_ROOT.is_dir() and not os.environ.get("CI"),
    reason=f"{DEFAULT_ROOT} missing: apt-get install hershey-fonts-data")


@pytest.fixture(scope="module")
def categories():
    return hershey_categories()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """16-pixel corpus, 3 drawers per font (clean + 2 jittered)."""
    return hershey_corpus(size=16, variants=3, cache=TensorCache(tmp_path_factory.mktemp("c")))


# --- parsing --------------------------------------------------------------------------------
@needs_hershey
def test_a_known_glyph_matches_the_raw_file():
    raw = (DEFAULT_ROOT / "futural.jhf").read_text(encoding="latin-1").splitlines()
    assert raw[3] == "12345 12H]SBLb RYBRb RLOZO RKUYU"  # '#' in the simplex font
    glyph = read_font("futural")[3]
    assert (glyph.vertices, glyph.left, glyph.right) == (12, ord("H") - 82, ord("]") - 82)
    assert glyph.strokes == (((1, -16), (-6, 16)), ((7, -16), (0, 16)),
                             ((-6, -3), (8, -3)), ((-7, 3), (7, 3)))
    declared = [int(line[5:8]) for line in raw if line.strip()]
    assert [g.vertices for g in read_font("futural")] == declared


def test_wrapped_glyph_lines_are_read_by_vertex_count():
    line = "12345 27H\\PBP_ RTBT_ RYIWGTFPFMGKIKKLMMNOOUQWRXSYUYXWZT[P[MZKX"
    wrapped = "\n".join([line[:30], line[30:]] + ["12345  1JZ"])
    glyphs = parse_jhf(wrapped)
    assert [g.index for g in glyphs] == [0, 1] and glyphs[1].strokes == ()
    assert glyphs[0] == parse_jhf(line)[0] and glyphs[0].vertices == 27


@pytest.mark.parametrize(("text", "message"), [
    ("12345 xyJZ", r"font\.jhf:1: no vertex count"),
    ("12345  1JZ\n12345  9MWRFRT", r"font\.jhf:2: glyph declares 9 vertices"),
])
def test_malformed_fonts_name_the_line(text, message):
    with pytest.raises(CorpusError, match=message):
        parse_jhf(text, "font.jhf")


def test_missing_package_says_how_to_install_it(tmp_path):
    with pytest.raises(CorpusError, match=r"apt-get install hershey-fonts-data.*root="):
        hershey_corpus(root=tmp_path / "nowhere", cache=TensorCache(tmp_path))


# --- the split and the counts ---------------------------------------------------------------
@needs_hershey
def test_split_is_by_alphabet_and_leaks_no_latin_glyph(categories):
    split_of = {a.name: a.split for a in ALPHABETS}
    ids = [c.category.id for c in categories]
    assert len(ids) == len(set(ids))
    assert all(c.category.split == split_of[c.category.alphabet] for c in categories)
    latin = {g.strokes for font in LATIN_FONTS for g in read_font(font)}
    used = [g.strokes for c in categories for _, g in c.glyphs]
    assert len(used) == len(set(used))  # no glyph drawn twice
    evaluation = [g.strokes for c in categories if c.category.split == "evaluation"
                  for _, g in c.glyphs]
    assert not latin & set(evaluation)
    assert not {f for c in categories if c.category.split == "evaluation"
                for f, _ in c.glyphs} & set(LATIN_FONTS)


@needs_hershey
def test_counts_allow_20_way_episodes_with_most_in_background(categories, small):
    count = {s: sum(c.category.split == s for c in categories)
             for s in ("background", "evaluation")}
    assert count["evaluation"] >= 40 and count["background"] > count["evaluation"]
    assert sum(c.category.alphabet == "latin" for c in categories) == 62
    assert len(small.images) == 3 * sum(len(c.glyphs) for c in categories)
    assert len(small.categories) == len(categories)
    assert np.bincount(small.labels).min() >= 3
    evaluation = small.split("evaluation")
    assert len(evaluation.categories) == count["evaluation"] and not small.human


# --- rendering ------------------------------------------------------------------------------
@needs_hershey
def test_rendering_is_deterministic_for_a_seed(small, tmp_path):
    def draw(seed: int, cache: str):
        return hershey_corpus(size=16, variants=3, seed=seed, alphabets=("greek", "kanji"),
                              cache=TensorCache(tmp_path / cache))

    first, again, other = draw(0, "a"), draw(0, "b"), draw(1, "c")
    assert np.array_equal(again.images, first.images)
    assert np.array_equal(again.drawers, first.drawers)
    jittered = first.drawers % 3 != 0
    assert np.array_equal(other.images[~jittered], first.images[~jittered])
    assert not np.array_equal(other.images[jittered], first.images[jittered])
    part = small.split("evaluation")  # a subset draws what the whole corpus draws
    kanji = np.isin(part.labels, [k for k, c in enumerate(part.categories)
                                  if c.alphabet == "kanji"])
    assert np.array_equal(first.split("evaluation").images, part.images[kanji])


def test_unknown_alphabets_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown alphabets \['elvish'\]"):
        hershey_corpus(alphabets=("elvish",), cache=TensorCache(tmp_path))


@needs_hershey
def test_variants_differ_but_resemble_their_category(small):
    x = small.images.reshape(len(small.images), -1).astype(np.float64)  # (N, S*S)
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(small.categories), 60, replace=False)
    within, between = [], []
    for label in picks:
        rows = x[small.labels == label][:3]  # one font's three drawers
        assert len({r.tobytes() for r in rows}) == 3
        within.append((rows @ rows.T)[np.triu_indices(3, 1)].mean())
        others = x[rng.choice(np.flatnonzero(small.labels != label), 20)]
        between.append((rows @ others.T).mean())
    assert np.mean(within) > np.mean(between) + 0.3


@needs_hershey
@pytest.mark.parametrize("size", [16, 48])
def test_sizes_are_configurable_with_ink_on_paper(size):
    glyph = read_font("timesr")[33]  # 'A'
    image = render_glyph(glyph, size)
    assert image.shape == (size, size) and image.dtype == np.uint8
    assert image.max() == 255 and image[0].max() == 0 and image[:, -1].max() == 0
    rows, cols = np.nonzero(image)
    assert abs((rows.min() + rows.max()) / 2 - size / 2) <= 1.5
    assert abs((cols.min() + cols.max()) / 2 - size / 2) <= 1.5


# --- Omniglot -------------------------------------------------------------------------------
def _stroke_png(path: Path, angle: int) -> None:
    """A 105 x 105 Omniglot-like drawing: black strokes on white, mode '1'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("1", (105, 105), 1)
    ImageDraw.Draw(image).line([(20, 20 + angle), (85, 85 - angle)], fill=0, width=6)
    image.save(path)


@pytest.fixture
def omniglot(tmp_path) -> Path:
    for split, alphabet in (("background", "Latin"), ("evaluation", "Tengwar")):
        for c in (1, 2):
            for drawer in (1, 2, 3):
                _stroke_png(tmp_path / f"images_{split}" / alphabet / f"character{c:02d}"
                            / f"{c:02d}{drawer:02d}_{drawer:02d}.png", 10 * c)
    return tmp_path


def test_omniglot_keeps_its_split_and_drawers(omniglot):
    corpus = omniglot_corpus(omniglot, size=28)
    assert corpus.images.shape == (12, 28, 28) and corpus.human
    assert [c.id for c in corpus.categories] == [
        "Latin/character01", "Latin/character02", "Tengwar/character01",
        "Tengwar/character02"]
    assert [c.split for c in corpus.categories] == ["background"] * 2 + ["evaluation"] * 2
    assert corpus.drawers.tolist() == [1, 2, 3] * 4
    assert corpus.images[:, 0, 0].max() == 0 and corpus.images[:, 14, 14].min() > 200


def _misname(root: Path) -> str:
    _stroke_png(root / "images_background/Latin/character01/first.png", 0)
    return "first.png: expected a name like 0709_01.png"


def _garble(root: Path) -> str:
    path = root / "images_background/Latin/character01/0101_01.png"
    path.write_bytes(b"not a png")
    return "0101_01.png: unreadable image"


def _flatten(root: Path) -> str:
    _stroke_png(root / "images_evaluation/Runes/0101_01.png", 0)
    return "Runes has no character folders"


@pytest.mark.parametrize("breaks", [_misname, _garble, _flatten])
def test_omniglot_errors_name_the_file(omniglot, breaks):
    with pytest.raises(CorpusError, match=re.escape(breaks(omniglot))):
        omniglot_corpus(omniglot)


def test_omniglot_without_its_folders(tmp_path):
    with pytest.raises(CorpusError, match="neither images_background/ nor images_evaluation/"):
        omniglot_corpus(tmp_path)


# --- QuickDraw-FS ---------------------------------------------------------------------------
def test_quickdraw_fs_release_layout(tmp_path):
    data = np.zeros((4, 5, 48, 48), dtype=np.uint8)  # (C, K, H, W), ink 255 on 0
    data[:, :, 10:30, 20:23] = 255
    np.savez(tmp_path / "all_qd_fs.npz", data=data)
    corpus = quickdraw_fs_corpus(tmp_path / "all_qd_fs.npz", size=24, n_background=3,
                                 per_category=2)
    assert corpus.images.shape == (8, 24, 24) and corpus.human
    assert corpus.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [c.split for c in corpus.categories] == ["background"] * 3 + ["evaluation"]
    assert corpus.images[:, 0, 0].max() == 0 and corpus.images.max() > 200
    assert len(set(corpus.drawers.tolist())) == 8
    with pytest.raises(CorpusError, match="n_background=550 leaves no"):
        quickdraw_fs_corpus(tmp_path / "all_qd_fs.npz")


def test_quickdraw_flat_layout_with_split_names_and_white_paper(tmp_path):
    images = np.ones((6, 32, 32), dtype=np.float32)  # white paper, black ink
    images[:, 5:25, 16] = 0.0
    np.savez(tmp_path / "qd.npz", images=images, labels=np.array([0, 0, 1, 1, 2, 2]),
             split=np.array(["background"] * 4 + ["evaluation"] * 2),
             names=np.array(["cat", "dog", "owl"]))
    corpus = quickdraw_fs_corpus(tmp_path / "qd.npz", size=32)
    assert [c.id for c in corpus.categories] == ["quickdraw/cat", "quickdraw/dog",
                                                 "quickdraw/owl"]
    assert [c.split for c in corpus.categories] == ["background", "background", "evaluation"]
    assert corpus.images[:, 0, 0].max() == 0 and corpus.images[:, 10, 16].min() == 255


@pytest.mark.parametrize(("arrays", "message"), [
    ({"pictures": np.zeros((2, 8, 8))}, r"expected 'data' \(C, K, H, W\) or 'images'"),
    ({"images": np.zeros((2, 8, 8)), "labels": np.array([0, 1])}, "pass n_background"),
    ({"images": np.zeros((2, 8, 8)), "labels": np.array([0, 0]),
      "split": np.array(["background", "evaluation"])}, "category 0 is in both splits"),
    ({"images": np.zeros((2, 8, 8), dtype=np.int32), "labels": np.array([0, 1]),
      "split": np.array(["background", "evaluation"])}, "must be uint8 or float"),
])
def test_quickdraw_bad_files_are_named(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CorpusError, match=f"bad.npz: .*{message}|bad.npz: {message}"):
        quickdraw_fs_corpus(tmp_path / "bad.npz")


def test_quickdraw_missing_file(tmp_path):
    with pytest.raises(CorpusError, match=r"missing\.npz not found"):
        quickdraw_fs_corpus(tmp_path / "missing.npz")
