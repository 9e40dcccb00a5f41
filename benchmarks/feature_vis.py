"""Our batched feature visualization (stimuli.feature_vis) against Horama's MACO and Fourier
and torch-lucent's Fourier render, and MACO's plausibility claim.

1. Speed and objective, side by side: the benchmarks' ResNet-18 (random weights: no weights
   are downloaded; a state dict saved here is loaded by the oracles too), the same units of
   one layer, image size, steps and crops per step (6, Horama's default). Ours optimizes the
   16 units in one batched run (and, to show what batching buys, in 16 single runs); the
   oracles run in their own venv (benchmarks/oracles/setup.sh) one unit per call. Every final
   image is scored the same way here: the unit's mean activation on the whole image at the
   model's input size (higher is better). ``ms_per_step`` is per unit and step.
2. Plausibility (Fel et al. 2023's claim: MACO's images look more natural than Fourier's):
   on the trained demo CNN, a stimulus build with ``maco`` and ``fourier`` for the same units
   and steps; the manifest's mean ``plausibility`` (cosine similarity in the penultimate
   layer to the unit's natural extremes) and ``relative_activation`` of each.

    python benchmarks/feature_vis.py            # 224 px, 16 units, 50 steps
    python benchmarks/feature_vis.py --quick    # 64 px, 16 units, 10 steps

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.resnet import resnet18  # noqa: E402
from stimuli.cache import default_cache_dir  # noqa: E402
from stimuli.feature_vis import (  # noqa: E402
    Fourier,
    LayerOutput,
    Maco,
    UnitObjective,
    Views,
    frozen,
    optimize,
    random_phase,
    random_spectrum,
)
from stimuli.spectrum import fetch_imagenet_spectrum, resize_spectrum  # noqa: E402

log = logging.getLogger("benchmarks.feature_vis")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ORACLE_PYTHON = ROOT / ".venv-oracles" / "bin" / "python"
LR = {"maco": 0.05, "fourier": 0.05}  # our methods' defaults
VIEWS = 6  # Horama's crops per step


def ours(method: str, model, layer: str, units: list[int], size: int, steps: int,
         cache_dir: Path, *, batched: bool) -> tuple[float, np.ndarray]:
    """(ms per unit and step, final images (U, 3, S, S) in [0, 1])."""
    objective = UnitObjective(LayerOutput(model, layer, mean=MEAN, std=STD), None)
    magnitude = resize_spectrum(fetch_imagenet_spectrum(default_cache_dir())[0], size, channels=3)
    groups = [units] if batched else [[u] for u in units]
    images, elapsed = [], 0.0
    for group in groups:
        gen = torch.Generator().manual_seed(sum(group))
        if method == "maco":
            param = Maco(magnitude, random_phase(len(group), 3, size, gen))
        else:
            param = Fourier(random_spectrum(len(group), 3, size, gen))
        start = time.perf_counter()
        with frozen(model):
            result = optimize(param, objective, torch.tensor(group), torch.ones(len(group)),
                              steps=steps, lr=LR[method], input_size=size,
                              views=Views(n=VIEWS), gen=gen)
        elapsed += time.perf_counter() - start
        images.append(result.images.numpy())
    return 1e3 * elapsed / (steps * len(units)), np.concatenate(images)


def oracle(method: str, weights: Path, layer: str, units: list[int], size: int, steps: int,
           out: Path) -> dict:
    """One oracle run in .venv-oracles; its JSON, with its images (U, 3, S, S) in model
    input space."""
    cmd = [str(ORACLE_PYTHON), str(ROOT / "benchmarks/oracles/run_fv.py"), "--method", method,
           "--weights", str(weights), "--layer", layer, "--units", ",".join(map(str, units)),
           "--image-size", str(size), "--model-input-size", str(size), "--steps", str(steps),
           "--out", str(out), "--threads", str(torch.get_num_threads())]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"skipped": done.stderr.strip().splitlines()[-1:]}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if "skipped" not in figures:
        figures["images"] = np.load(out / "images.npy")
    return figures


@torch.no_grad()
def score(model, layer: str, units: list[int], images: np.ndarray, size: int,
          pixels: bool) -> float:
    """Mean over units of the unit's mean activation on its whole image."""
    x = torch.from_numpy(images).float()
    if pixels:  # [0, 1] -> the model's input
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True) \
        if x.shape[-1] != size else x
    acts = LayerOutput(model, layer, mean=(0.0,) * 3, std=(1.0,) * 3)(x)  # already normalized
    acts = acts.flatten(2).mean(2) if acts.ndim == 4 else acts
    return float(acts[torch.arange(len(units)), torch.tensor(units)].mean())


def speed(args, workdir: Path) -> dict:
    model = resnet18(seed=0).eval()
    weights = workdir / "resnet18.pt"
    torch.save(model.state_dict(), weights)
    units = list(range(args.units))
    out: dict = {}
    for method in ("maco", "fourier"):
        batched_ms, images = ours(method, model, args.layer, units, args.size, args.steps,
                                  workdir, batched=True)
        single_ms, _ = ours(method, model, args.layer, units, args.size, args.steps, workdir,
                            batched=False)
        out[method] = {
            "ms_per_step": round(batched_ms, 2),
            "ms_per_step_single": round(single_ms, 2),
            "batching_speedup": round(single_ms / batched_ms, 2),
            "objective": round(score(model, args.layer, units, images, args.size, True), 4),
        }
        log.info("ours %s: %s", method, out[method])
    if not ORACLE_PYTHON.exists():
        log.warning("no %s: run benchmarks/oracles/setup.sh for the oracles", ORACLE_PYTHON)
        return out
    for method, key in (("maco", "horama_maco"), ("fourier", "horama_fourier"),
                        ("lucent", "lucent_fourier")):
        figures = oracle(method, weights, args.layer, units, args.size, args.steps,
                         workdir / method)
        if "skipped" in figures:
            out[key] = {"skipped": figures["skipped"]}
            continue
        images = figures.pop("images")
        out[key] = {"ms_per_step": round(figures["ms_per_step"], 2),
                    "objective": round(score(model, args.layer, units, images, args.size,
                                             figures["value_space"] == "[0,1]"), 4)}
        log.info("%s: %s", key, out[key])
    for ours_id, theirs in (("maco", "horama_maco"), ("fourier", "horama_fourier")):
        if "ms_per_step" in out.get(theirs, {}):
            out[ours_id]["speedup_vs_horama"] = round(
                out[theirs]["ms_per_step"] / out[ours_id]["ms_per_step"], 2)
            out[ours_id]["objective_vs_horama"] = round(
                out[ours_id]["objective"] - out[theirs]["objective"], 4)
    return out


def plausibility(args, workdir: Path) -> dict:
    """maco vs fourier on the demo CNN, from the manifest of a real build."""
    from stimuli.build import build_stimuli

    config = (ROOT / "stimuli/configs/demo-build.toml").read_text()
    config = config.replace('methods = ["exemplars"]', 'methods = ["exemplars", "maco", "fourier"]')
    config = config.replace('sources = ["neuron", "nmf", "sae"]', 'sources = ["neuron"]')
    config = config.replace("per_layer = 12", f"per_layer = {args.demo_units}")
    tables = "".join(f"\n[{m}]\nsteps = {args.demo_steps}\nn_images = 4\n"
                     for m in ("maco", "fourier"))
    path = ROOT / "stimuli/configs" / f".benchmark-{args.demo_steps}.toml"
    path.write_text(config + tables)
    try:
        build_stimuli(path, output=workdir / "demo-set")
    finally:
        path.unlink()
    manifest = json.loads((workdir / "demo-set/manifest.json").read_text())
    out = {}
    for method in ("maco", "fourier"):
        refs = [r for e in manifest["entries"] for r in e["explanations"][method]["max_refs"]]
        out[method] = {
            "plausibility": round(float(np.mean([r["meta"]["plausibility"] for r in refs])), 4),
            "relative_activation": round(float(np.mean(
                [r["meta"]["relative_activation"] for r in refs])), 4),
            "n_images": len(refs),
        }
    natural = [r for e in manifest["entries"] for r in e["explanations"]["exemplars"]["max_refs"]]
    out["claim_holds"] = bool(
        out["maco"]["plausibility"] > out["fourier"]["plausibility"]
        and out["maco"]["relative_activation"] >= out["fourier"]["relative_activation"])
    out["n_natural_refs"] = len(natural)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, ours and the oracles' alike (1: steadiest on a "
                             "small shared machine)")
    parser.add_argument("--size", type=int, help="image side (default 64 with --quick, 224)")
    parser.add_argument("--steps", type=int, help="steps (default 10 with --quick, 50)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, steps = (64, 10) if args.quick else (224, 50)
    args.size, args.steps = args.size or size, args.steps or steps
    args.demo_steps, args.demo_units = (100, 4) if args.quick else (256, 12)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        figures = speed(args, workdir)
        claim = plausibility(args, workdir)
    result = {
        "setup": {"model": "resnet18 (random weights)", "layer": args.layer,
                  "units": args.units, "image_size": args.size, "steps": args.steps,
                  "views": VIEWS, "threads": torch.get_num_threads(),
                  "plausibility_model": "demo CNN", "plausibility_steps": args.demo_steps},
        **figures,
        "plausibility": claim,
    }
    for method in ("maco", "fourier"):
        result[method]["plausibility"] = claim[method]["plausibility"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
