"""MACO's magnitude spectra: estimated from images, fetched from the xplique wheel, resized."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from stimuli import spectrum
from stimuli.images import ArrayImages, ImageTransform
from stimuli.spectrum import (
    SpectrumConfig,
    SpectrumError,
    estimate_spectrum,
    fetch_imagenet_spectrum,
    magnitude_spectrum,
    resize_spectrum,
)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float images (N, H, W[, 3]) scaled to fill 10..245 (no clipping)."""
    lo, hi = x.min(), x.max()
    return np.round(10 + 235 * (x - lo) / (hi - lo)).astype(np.uint8)


def gratings(n: int, size: int, cycles: int, seed: int = 0) -> np.ndarray:
    """Vertical stripes (varying along x) at ``cycles`` per image, random phase, plus noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(size)[None, None, :]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    wave = np.cos(2 * np.pi * cycles * x / size + phase) * np.ones((n, size, size))
    return to_uint8(wave + 0.3 * rng.standard_normal((n, size, size)))


def pink_noise(n: int, size: int, seed: int = 0) -> np.ndarray:
    """White noise filtered by 1/f: magnitude falls as 1/f (log-log slope -1)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    white = np.fft.rfft2(rng.standard_normal((n, size, size)))
    return to_uint8(np.fft.irfft2(white / f, s=(size, size)))


def radial_profile(mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean magnitude of (S, S//2+1) over rings of integer radius 1..S//2-1."""
    size = mag.shape[0]
    fy = np.fft.fftfreq(size, 1 / size)[:, None]
    fx = np.arange(mag.shape[1])[None, :]
    radius = np.rint(np.hypot(fy, fx)).astype(int)
    radii = np.arange(1, size // 2)
    return radii, np.array([mag[radius == r].mean() for r in radii])


# --- estimated from images ------------------------------------------------------------


def test_grating_peaks_at_its_frequency_and_grayscale_has_one_channel():
    source = ArrayImages(gratings(24, 32, cycles=5))
    mag, count = estimate_spectrum(source, ImageTransform(size=32, mode="L"), limit=100)
    assert count == 24
    assert mag.dtype == torch.float32 and mag.shape == (1, 32, 17)
    flat = mag[0].clone()
    flat[0, 0] = 0  # the filled-in DC is not a frequency of the images
    assert np.unravel_index(int(flat.argmax()), flat.shape) == (0, 5)
    assert flat[0, 5] > 10 * flat[1:, :].median()


def test_pink_noise_falls_as_one_over_frequency():
    source = ArrayImages(pink_noise(16, 64))
    mag, _ = estimate_spectrum(source, ImageTransform(size=64, mode="L"))
    radii, profile = radial_profile(mag[0].double().numpy())
    assert np.all(np.diff(profile[:20]) < 0)
    keep = (radii >= 2) & (radii <= 24)
    slope = np.polyfit(np.log(radii[keep]), np.log(profile[keep]), 1)[0]
    assert -1.2 < slope < -0.8


def test_dc_is_the_mean_of_its_neighbours():
    mag, _ = estimate_spectrum(ArrayImages(pink_noise(4, 16)), ImageTransform(size=16, mode="L"))
    m = mag[0]
    assert m[0, 0] == pytest.approx(float(m[1, 0] + m[-1, 0] + m[0, 1]) / 3, rel=1e-6)
    assert m[0, 0] > 0


def test_identical_rgb_channels_put_their_energy_in_the_first_decorrelated_channel():
    gray = pink_noise(8, 32)
    rgb = ArrayImages(np.repeat(gray[..., None], 3, axis=-1))
    mag, _ = estimate_spectrum(rgb, ImageTransform(size=32, mode="RGB"))
    assert mag.shape == (3, 32, 17)
    energy = (mag.double() ** 2).sum(dim=(1, 2))
    assert energy[0] / energy.sum() > 0.98


def test_normalization_of_the_transform_is_dropped():
    source = ArrayImages(pink_noise(4, 16))
    plain, _ = estimate_spectrum(source, ImageTransform(size=16, mode="L"))
    other, _ = estimate_spectrum(source, ImageTransform(size=16, mode="L", mean=(0.2,), std=(3.0,)))
    torch.testing.assert_close(plain, other)


def test_limit_takes_a_seeded_subset():
    source = ArrayImages(pink_noise(12, 16))
    transform = ImageTransform(size=16, mode="L")
    a, count = estimate_spectrum(source, transform, limit=5, seed=1)
    b, _ = estimate_spectrum(source, transform, limit=5, seed=1)
    c, _ = estimate_spectrum(source, transform, limit=5, seed=2)
    assert count == 5
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_images_estimate_is_cached_with_provenance(tmp_path, monkeypatch):
    source = ArrayImages(pink_noise(6, 16))
    args = dict(images=source, transform=ImageTransform(size=16, mode="L"), cache_dir=tmp_path)
    config = SpectrumConfig(n_images=4)
    mag, prov = magnitude_spectrum(config, seed=3, **args)
    assert mag.shape == (1, 16, 9)
    assert prov["source"] == "images" and prov["n_images"] == 4
    assert prov["sha256"] == hashlib.sha256(mag.numpy().tobytes()).hexdigest()
    assert len(list((tmp_path / "spectra").glob("spectrum-*.pt"))) == 1

    def no_recompute(*a, **k):
        raise AssertionError("estimated again despite the cache")

    monkeypatch.setattr(spectrum, "estimate_spectrum", no_recompute)
    again, prov_again = magnitude_spectrum(config, seed=3, **args)
    torch.testing.assert_close(again, mag)
    assert prov_again == prov
    with pytest.raises(AssertionError, match="estimated again"):
        magnitude_spectrum(config, seed=4, **args)  # another seed is another entry


def test_config_forbids_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        SpectrumConfig(sorce="images")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        SpectrumConfig(n_images=0)


# --- fetched from the xplique wheel (real pip, local fake wheel) -------------------------


def fake_wheel(directory: Path, npy: bytes | None) -> Path:
    """A minimal xplique-2.0.2 wheel pip accepts, holding ``npy`` at the spectrum's path."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "xplique-2.0.2-py3-none-any.whl"
    info = "xplique-2.0.2.dist-info"
    files = {
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: xplique\nVersion: 2.0.2\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: assay-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        if npy is not None:
            archive.writestr(spectrum.XPLIQUE_SPECTRUM_PATH, npy)
        for name, text in files.items():
            archive.writestr(name, text)
        record = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
        archive.writestr(f"{info}/RECORD", record)
    return wheel


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fake_spectrum() -> np.ndarray:
    fy = np.fft.fftfreq(512, 1 / 512)[:, None]
    fx = np.arange(257)[None, :]
    one_over_f = 1.0 / np.maximum(np.hypot(fy, fx), 1.0)
    return (np.array([3.0, 1.0, 0.5])[:, None, None] * one_over_f).astype(np.float32)


def test_fetch_from_a_local_wheel_then_from_the_cache(tmp_path, fake_spectrum):
    data = npy_bytes(fake_spectrum)
    links = tmp_path / "links"
    fake_wheel(links, data)
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    mag, got = fetch_imagenet_spectrum(cache, find_links=links, expected_sha256=digest)
    assert got == digest
    assert mag.dtype == torch.float32 and mag.shape == (3, 512, 257)
    np.testing.assert_array_equal(mag.numpy(), fake_spectrum)
    assert len(list((cache / "spectra").glob("*.npy"))) == 1

    shutil.rmtree(links)  # a second pip run would now fail
    again, got_again = fetch_imagenet_spectrum(cache, find_links=links, expected_sha256=digest)
    assert got_again == digest
    torch.testing.assert_close(again, mag)
    with pytest.raises(
        SpectrumError, match=rf"cached spectrum .* has SHA-256 {digest}, expected 0{{64}}"
    ):
        fetch_imagenet_spectrum(cache, find_links=links, expected_sha256="0" * 64)


def test_checksum_mismatch_names_the_file_and_both_digests(tmp_path, fake_spectrum):
    data = npy_bytes(fake_spectrum)
    fake_wheel(tmp_path / "links", data)
    digest = hashlib.sha256(data).hexdigest()
    message = (
        rf"spectrum_decorrelated\.npy in xplique-2\.0\.2-py3-none-any\.whl has SHA-256 "
        rf"{digest}, expected {spectrum.XPLIQUE_SPECTRUM_SHA256}"
    )
    with pytest.raises(SpectrumError, match=message):
        fetch_imagenet_spectrum(tmp_path / "cache", find_links=tmp_path / "links")
    assert not (tmp_path / "cache" / "spectra").exists()  # nothing unverified is cached


def test_wheel_without_the_spectrum_or_of_the_wrong_shape(tmp_path):
    fake_wheel(tmp_path / "empty", None)
    with pytest.raises(SpectrumError, match=r"holds no xplique/features_visualizations/"):
        fetch_imagenet_spectrum(tmp_path / "c1", find_links=tmp_path / "empty")
    fake_wheel(tmp_path / "small", npy_bytes(np.ones((3, 8, 5), np.float32)))
    with pytest.raises(SpectrumError, match=r"float32 \(3, 8, 5\), expected float32 \(3, 512"):
        fetch_imagenet_spectrum(
            tmp_path / "c2", find_links=tmp_path / "small", expected_sha256=None
        )


def test_pip_failure_names_the_package_and_the_alternative(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SpectrumError, match=r'pip could not download xplique==2\.0\.2.*"images"'):
        fetch_imagenet_spectrum(tmp_path / "cache", find_links=tmp_path / "nothing")


def test_imagenet_source_resizes_and_reports_the_package(tmp_path, monkeypatch, fake_spectrum):
    monkeypatch.setattr(
        spectrum,
        "fetch_imagenet_spectrum",
        lambda cache_dir: (torch.from_numpy(fake_spectrum), "f" * 64),
    )
    config = SpectrumConfig(source="imagenet")
    rgb = ImageTransform(size=64, mode="RGB")
    mag, prov = magnitude_spectrum(config, images=None, transform=rgb, cache_dir=tmp_path, seed=0)
    assert mag.shape == (3, 64, 33)
    assert prov == {
        "source": "imagenet",
        "package": "xplique==2.0.2",
        "file": spectrum.XPLIQUE_SPECTRUM_PATH,
        "sha256": "f" * 64,
        "size": 64,
    }
    gray = ImageTransform(size=64, mode="L")
    with pytest.raises(SpectrumError, match=r'takes 1 channel; use source = "images"'):
        magnitude_spectrum(config, images=None, transform=gray, cache_dir=tmp_path, seed=0)


# --- resizing -----------------------------------------------------------------------------


def test_resize_shape_keeps_the_fall_off(fake_spectrum):
    mag = resize_spectrum(torch.from_numpy(fake_spectrum), 224)
    assert mag.shape == (3, 224, 113)
    assert mag.dtype == torch.float32
    assert torch.all(mag[:, 1:20, 0].diff(dim=1) < 0)
    assert resize_spectrum(mag, 224) is mag
    odd = resize_spectrum(mag, 35)
    assert odd.shape == (3, 35, 18)


@pytest.mark.parametrize(
    ("shape", "size", "channels", "match"),
    [
        ((3, 16, 9), 8, 1, r'a 3-channel spectrum cannot shape a 1-channel model.*"images"'),
        ((1, 16, 9), 8, 3, r"a 1-channel spectrum cannot shape a 3-channel model"),
        ((16, 9), 8, None, r"is \(C, S, S//2\+1\), not \(16, 9\)"),
        ((1, 16, 9), 1, None, r"at least 2, not 1"),
    ],
)
def test_resize_rejects(shape, size, channels, match):
    with pytest.raises(ValueError, match=match):
        resize_spectrum(torch.ones(shape), size, channels=channels)
