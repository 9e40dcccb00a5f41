"""Attribution maps (stimuli.attribution): milliseconds per image of every method, against
Captum called directly where Captum has the method, and CRAFT's time against its number of
Sobol designs.

One model and one batch for everything: the shortcut scenarios' small CNN (stimuli.lipschitz
.small_cnn: conv 3->16, ReLU, max-pool, conv 16->32, ReLU, max-pool, linear to 2 classes;
random weights: the time does not depend on them) on 32 x 32 shortcut images. Our
``attribute`` is a thin wrapper over Captum for saliency, SmoothGrad (NoiseTunnel),
Integrated Gradients, Grad-CAM (LayerGradCam) and occlusion, so its time over Captum's, with
the same settings and the same reduction to (N, H, W), should be about 1; the maps should
agree to rounding. Each figure is the best of ``--repeats`` runs, ours and Captum's taken in
turns (the machine may be shared, and a load that came and went would otherwise favour one
side), after one untimed warm-up run. CRAFT (fit_concepts: crops, NMF, then the Sobol
indices, whose cost grows with the designs) is cut after the last ReLU, as builds cut it.

    python benchmarks/attributions.py            # batch 64; a 64 x 64, width-32 CNN, batch 16
    python benchmarks/attributions.py --quick    # batch 16, designs up to 32 (< 1 minute)

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stimuli.attribution.craft import fit_concepts  # noqa: E402
from stimuli.attribution.maps import ATTRIBUTIONS, attribute  # noqa: E402
from stimuli.lipschitz import small_cnn  # noqa: E402
from stimuli.shortcuts import ShortcutSpec, make_dataset  # noqa: E402

log = logging.getLogger("benchmarks.attributions")

# the defaults of stimuli.attribution.maps, which Captum is given too
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 16, 0.15
IG_STEPS = 32
OCCLUSION_WINDOW, OCCLUSION_STRIDE, OCCLUSION_BASELINE = 0.2, 0.1, 0.5
LAST_RELU = 5  # g = model[:5] (through the second ReLU), h = model[5:]


def captum_saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                    seed: int) -> torch.Tensor:
    return Saliency(model).attribute(x, target=target, abs=False).abs().sum(dim=1)


def captum_smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                      seed: int) -> torch.Tensor:
    spread = float(x.detach().max() - x.detach().min()) or 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a = NoiseTunnel(Saliency(model)).attribute(
            x, target=target, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
            nt_samples_batch_size=SMOOTHGRAD_SAMPLES, stdevs=SMOOTHGRAD_NOISE * spread,
            abs=False)
    return a.abs().sum(dim=1)


def captum_integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                                seed: int) -> torch.Tensor:
    a = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                             n_steps=IG_STEPS)
    return a.abs().sum(dim=1)


def captum_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   seed: int) -> torch.Tensor:
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    cam = LayerGradCam(model, conv).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[:, 0]


def captum_occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                     seed: int) -> torch.Tensor:
    side, c = x.shape[-1], x.shape[1]
    w, s = max(1, round(OCCLUSION_WINDOW * side)), max(1, round(OCCLUSION_STRIDE * side))
    a = Occlusion(model).attribute(x, sliding_window_shapes=(c, w, w), strides=(c, s, s),
                                   baselines=OCCLUSION_BASELINE, target=target,
                                   perturbations_per_eval=64)
    return a.sum(dim=1).clamp(min=0) / c


CAPTUM: dict[str, Callable[..., torch.Tensor]] = {
    "saliency": captum_saliency, "smoothgrad": captum_smoothgrad,
    "integrated_gradients": captum_integrated_gradients, "gradcam": captum_gradcam,
    "occlusion": captum_occlusion,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(runs: dict[str, Callable[[], object]], repeats: int,
               device: torch.device) -> tuple[dict[str, float], dict[str, object]]:
    """The best of ``repeats`` wall times (s) of each run, the runs taken in turns after one
    untimed warm-up each; and each run's last result."""
    results = {name: run() for name, run in runs.items()}  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            results[name] = run()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def compare_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, repeats: int,
                 device: torch.device) -> dict:
    """ms per image of each method, ours and Captum's, their ratio and agreement."""
    n = len(x)
    ms, captum_ms, ratio, diff = {}, {}, {}, {}
    for method in ATTRIBUTIONS:
        runs: dict[str, Callable[[], object]] = {
            "ours": lambda m=method: attribute(m, model, x, target, seed=0)}
        if method in CAPTUM:
            runs["captum"] = lambda m=method: CAPTUM[m](
                model, x.detach().clone().requires_grad_(True), target, 0).detach()
        seconds, maps = best_times(runs, repeats, device)
        ms[method] = round(1e3 * seconds["ours"] / n, 3)
        line = f"  {method:22s} {ms[method]:10.3f}"
        if "captum" in seconds:
            captum_ms[method] = round(1e3 * seconds["captum"] / n, 3)
            ratio[method] = round(seconds["ours"] / seconds["captum"], 3)
            ours_maps, their_maps = maps["ours"], maps["captum"]
            scale = float(their_maps.abs().max()) or 1.0
            diff[method] = float((ours_maps - their_maps).abs().max()) / scale
            line += f" {captum_ms[method]:10.3f} {ratio[method]:7.3f} {diff[method]:12.2e}"
        print(line)
    return {"ms_per_image": ms, "captum_ms_per_image": captum_ms, "ratio_to_captum": ratio,
            "max_rel_diff_to_captum": diff}


def craft_times(model: nn.Sequential, x: torch.Tensor, designs: list[int], n_crops: int,
                repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds of fit_concepts (6 concepts, crops of half the image side) by designs."""
    g, h = model[:LAST_RELU], model[LAST_RELU:]
    out = {}
    for n_designs in designs:
        seconds, _ = best_times({"craft": lambda d=n_designs: fit_concepts(
            g, h, x, 0, n_concepts=6, n_crops=n_crops, crop_size=x.shape[-1] // 2,
            n_designs=d, seed=0)}, repeats, device)
        out[str(n_designs)] = round(seconds["craft"], 4)
        print(f"  {n_designs:7d} designs {out[str(n_designs)]:9.3f} s")
    return out


def benchmark(size: int, width: int, n: int, designs: list[int], n_crops: int,
              repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = small_cnn(2, channels=3, width=width, size=size).eval().to(device)
    x = make_dataset(ShortcutSpec(size=size), n, seed=0).images.to(device)  # N, 3, S, S
    with torch.no_grad():
        target = model(x).argmax(dim=1)  # N: the decided classes, as builds explain them
    print(f"\nsmall CNN, {size} x {size}, width {width}, batch {n}, {device}")
    print(f"  {'method':22s} {'ours ms':>10s} {'captum ms':>10s} {'ratio':>7s} "
          f"{'max rel diff':>12s}")
    figures = compare_maps(model, x, target, repeats, device)
    print(f"  CRAFT (fit_concepts, 6 concepts, {n_crops} crops), best of {repeats}:")
    figures["craft_seconds_by_designs"] = craft_times(model, x, designs, n_crops, repeats,
                                                      device)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 16, designs up to 32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: steadiest on a small shared machine)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, designs, n_crops = (16, [8, 16, 32], 64) if args.quick else (64, [8, 16, 32, 64], 256)
    start = time.perf_counter()
    result = {
        "setup": {"model": "small_cnn (random weights)", "size": 32, "width": 16, "batch": n,
                  "device": str(device), "threads": torch.get_num_threads(),
                  "repeats": args.repeats, "craft_crops": n_crops},
        **benchmark(32, 16, n, designs, n_crops, args.repeats, device),
    }
    if not args.quick:
        # a quarter of the batch: RISE alone takes about a second an image on one thread
        result["large"] = {"size": 64, "width": 32, "batch": n // 4,
                           **benchmark(64, 32, n // 4, designs, n_crops, args.repeats,
                                       device)}
    ratios = list(result["ratio_to_captum"].values())
    result["max_ratio_to_captum"] = max(ratios)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
