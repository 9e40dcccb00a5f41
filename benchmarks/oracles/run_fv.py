"""Horama's MACO and Fourier, and torch-lucent's Fourier render, on the benchmarks' ResNet-18.

The oracles of benchmarks/feature_vis.py: the same model, units, image size and number of
steps as Assay's own feature visualization, run by the peer packages with their defaults.
They are never dependencies of Assay, so this runs inside .venv-oracles (made by
benchmarks/oracles/setup.sh), in .venv-oracles/work/ where Horama finds its spectrum:

    .venv-oracles/bin/python benchmarks/oracles/run_fv.py --method maco --layer layer4 \\
        --units 0,1 --image-size 128 --model-input-size 128 --steps 20 --out DIR

Each unit is one single-image optimization (Horama makes one image per call), on the CPU.
The objective is the mean of the unit's channel of the layer's output (over crops and
space; for ``fc``, the logit). Times cover the optimization loop alone (from its first step
to the end of its last: buffers, Horama's spectrum and lucent's set-up are left out), after
a 2-step warm-up call that is not counted. DIR/images.npy holds the final images (U, 3, S, S)
float32: Horama's in its value range [-2.5, 2.5] (the model's normalised input space),
lucent's in [0, 1] (it normalises with ImageNet's statistics before the model). The last
line printed is one JSON object with the figures.
"""

from __future__ import annotations

import os

# The oracles run on the CPU; lucent puts its parameters on cuda:0 whenever it sees one.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import horama  # noqa: E402
import horama.fourier_fv  # noqa: E402
import horama.maco_fv  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

try:
    with warnings.catch_warnings():  # kornia 0.4.1 (lucent's pin) uses torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        import lucent
        import lucent.optvis.render
        from lucent.optvis import objectives, param

    LUCENT_MISSING = ""
except Exception as exc:  # optional (setup.sh goes on without it), and old: it may break
    LUCENT_MISSING = f"torch-lucent cannot be imported ({type(exc).__name__}: {exc})"

log = logging.getLogger("oracles")
REPO = Path(__file__).resolve().parents[2]
WARMUP_STEPS = 2
SPECTRUM = "spectrum_decorrelated.npy"  # Horama reads it from the working directory


class LoopClock:
    """Stands in for tqdm in the oracles' modules: no progress bar, and the time of each
    optimization loop (from its first step to the end of its last) and of each step."""

    def __init__(self) -> None:
        self.loops: list[float] = []
        self.steps: list[float] = []

    def __call__(self, iterable: Iterable, *args, **kwargs) -> Iterator:
        return self._timed(iterable)

    def clear(self) -> None:
        self.loops.clear()
        self.steps.clear()

    def _timed(self, iterable: Iterable) -> Iterator:
        start = last = time.perf_counter()
        for item in iterable:
            yield item  # the caller's step runs here
            now = time.perf_counter()
            self.steps.append(now - last)
            last = now
        self.loops.append(last - start)


def load_resnet(weights: Path | None, seed: int) -> nn.Module:
    """benchmarks/resnet.py's ResNet-18 (imported by path: plain torch), seeded or loaded,
    in eval mode with frozen parameters (the images are optimised, not the model)."""
    spec = importlib.util.spec_from_file_location(
        "assay_bench_resnet", REPO / "benchmarks/resnet.py"
    )
    resnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(resnet)
    model = resnet.resnet18(seed=seed)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def channel_objective(model: nn.Module, layer: str, unit: int) -> Callable:
    """Horama's objective: images (N, 3, H, W) -> the mean over N and space of channel
    ``unit`` of ``layer``'s output (N, C, h, w), or of logit ``unit`` for (N, C)."""
    captured: dict[str, torch.Tensor] = {}
    model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("out", out)
    )

    def objective(images: torch.Tensor) -> torch.Tensor:
        model(images)
        return captured["out"][:, unit].mean()

    return objective


def check_units(model: nn.Module, layer: str, units: list[int], input_size: int) -> None:
    """Raise ValueError for a layer the model lacks, or a unit beyond its channels."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise ValueError(f"no layer {layer!r} in the ResNet-18 (top level: {names})") from None
    shapes: list[torch.Size] = []
    handle = module.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    handle.remove()
    channels = shapes[0][1]
    if bad := [u for u in units if not 0 <= u < channels]:
        raise ValueError(f"units {bad} outside {layer}'s {channels} channels")


def horama_image(
    method: str, model: nn.Module, args: argparse.Namespace, unit: int, steps: int
) -> np.ndarray:
    """One Horama optimization with its defaults: (3, S, S) in values_range (-2.5, 2.5)."""
    run = horama.maco if method == "maco" else horama.fourier
    image, _alpha = run(
        channel_objective(model, args.layer, unit),
        total_steps=steps,
        image_size=args.image_size,
        model_input_size=args.model_input_size,
        device="cpu",
    )
    return image.detach().numpy()


def lucent_image(model: nn.Module, args: argparse.Namespace, unit: int, steps: int) -> np.ndarray:
    """One lucent render with its defaults (Fourier basis, decorrelated colours, Adam 0.05,
    its standard transforms), at the same model input size: (3, S, S) in [0, 1]."""
    size = args.image_size
    images = lucent.optvis.render.render_vis(
        model,
        objectives.channel(args.layer.replace(".", "_"), unit),
        param_f=lambda: param.image(size, fft=True, decorrelate=True),
        thresholds=(steps,),
        preprocess=True,  # ImageNet normalisation, as our model expects
        fixed_image_size=args.model_input_size,
        show_image=False,
        progress=False,
    )
    return images[-1][0].transpose(2, 0, 1)  # H, W, 3 -> 3, H, W


def clear_hooks(model: nn.Module) -> None:
    """Remove the forward hooks of earlier units: lucent hooks every module on each call and
    never removes them, and would capture every layer's output for every later unit."""
    for module in model.modules():
        module._forward_hooks.clear()


def unit_seed(seed: int, unit: int) -> int:
    """A seed from (seed, unit), not from the unit's position in the list."""
    return int(np.random.SeedSequence([seed, unit]).generate_state(1)[0])


def run(args: argparse.Namespace) -> dict:
    """Warm up, then optimise one image per unit; save them and return the figures."""
    units = [int(u) for u in args.units.split(",")]
    model = load_resnet(args.weights, args.seed)
    check_units(model, args.layer, units, args.model_input_size)
    clock = LoopClock()
    for module in (horama.maco_fv, horama.fourier_fv) + (
        () if LUCENT_MISSING else (lucent.optvis.render,)
    ):
        module.tqdm = clock

    def optimise(unit: int, steps: int) -> np.ndarray:
        seed = unit_seed(args.seed, unit)
        torch.manual_seed(seed)
        np.random.seed(seed)  # lucent's transforms draw from numpy's global state
        clear_hooks(model)
        if args.method == "lucent":
            return lucent_image(model, args, unit, steps)
        return horama_image(args.method, model, args, unit, steps)

    optimise(units[0], WARMUP_STEPS)
    clock.clear()
    images = np.stack([optimise(u, args.steps) for u in units]).astype(np.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "images.npy", images)  # U, 3, S, S
    per_unit = [1e3 * s / args.steps for s in clock.loops]
    return {
        "method": args.method,
        "ms_per_step": float(np.mean(per_unit)),
        "ms_per_step_per_unit": per_unit,
        # Less sensitive than the mean to other processes on a shared CPU.
        "ms_per_step_median": 1e3 * float(np.median(clock.steps)),
        "steps": args.steps,
        "units": units,
        "layer": args.layer,
        "image_size": args.image_size,
        "model_input_size": args.model_input_size,
        "images_shape": list(images.shape),
        "value_space": "[0,1]" if args.method == "lucent" else "[-2.5,2.5]",
        "warmup_steps": WARMUP_STEPS,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "horama": horama.__version__,
        "lucent": None if LUCENT_MISSING else lucent.__version__,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("maco", "fourier", "lucent"), required=True)
    p.add_argument("--weights", type=Path, help="a ResNet-18 state dict (torch.save)")
    p.add_argument("--layer", default="layer4", help="a module name: layer3, layer4, fc")
    p.add_argument("--units", default="0,1", help="channels, comma-separated")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--model-input-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        help="torch's CPU threads (default: torch's); match Assay's run, and prefer 1 on a "
        "busy shared machine, where 2 threads wait on each other",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--work",
        type=Path,
        default=REPO / ".venv-oracles/work",
        help=f"the working directory holding Horama's {SPECTRUM}",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(argv)
    args.out = args.out.resolve()
    if args.weights is not None:
        args.weights = args.weights.resolve()
    if args.method == "lucent" and LUCENT_MISSING:
        log.warning("skipping lucent: %s", LUCENT_MISSING)
        print(json.dumps({"method": "lucent", "skipped": LUCENT_MISSING}))
        return
    if args.method == "maco" and not (args.work / SPECTRUM).is_file():
        raise SystemExit(f"{args.work / SPECTRUM} is missing: run benchmarks/oracles/setup.sh")
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # Horama would download the spectrum into the working directory
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    log.info(
        "%s: %.1f ms per step, images %s",
        args.method,
        result["ms_per_step"],
        result["images_shape"],
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
