"""Exemplar search throughput against the bare forward pass, and its peak memory.

Throughput, on two models over the same in-memory image batches: (a) bare forward passes,
(b) forward passes with the exemplar search of every channel of two layers (running top-k /
bottom-k, k = 108 as the default split needs), and (c) the same with NMF and TopK SAE
encoders of those layers (dictionary features) as well. The fractions are bare time /
search time (goal >= 0.9). The models: the demo CNN (28 px, block2 and block3, 16-atom
dictionaries) and a ResNet-18 (benchmarks/resnet.py; random weights with BatchNorm
statistics of the images, 224 px RGB procedural shapes, layer3 and layer4 with 64- and
128-atom dictionaries). Times are the best of interleaved rounds, summed per batch (a
batch's time runs from its hand-out to the next batch's; see ``timed``); the best whole
passes are reported too. NMF's encoder runs to ``transform_tol`` = 1e-4 of the exact codes;
its codes (one batch) and top-k / bottom-k exemplars are compared with those of its slow
path (``transform_tol`` = 0: every iteration, converged to float precision).

Memory: in a fresh child process per dataset size, images are generated batch by batch (so
no dataset sits in memory) and searched; the child samples its RSS at every batch and reports
the peak above its RSS after loading the model, and tracemalloc's peak for Python objects.
The peak must not grow with the dataset.

    python benchmarks/exemplars.py [--quick]

The last line printed is one JSON object with the figures ("throughput": the demo CNN,
"resnet18": the ResNet-18).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.resnet import calibrate_batchnorm, resnet18  # noqa: E402
from stimuli.activations import sample_positions, to_positions  # noqa: E402
from stimuli.datasets import procedural_dataset  # noqa: E402
from stimuli.demo_model import demo_preprocess, load_demo_model  # noqa: E402
from stimuli.exemplars import ExemplarSearch  # noqa: E402
from stimuli.models import LayerCapture  # noqa: E402
from stimuli.nmf import NMF  # noqa: E402
from stimuli.sae import TopKSAE  # noqa: E402

LAYERS = ("block2", "block3")
K_EXTREMES = 108  # 9 buckets x 12 batches, the default split
BATCH = 256
# ResNet-18 at 224 px: layer3 (256 channels, 14 x 14) and layer4 (512, 7 x 7). Dictionaries of
# a quarter of the channels (NMF, as CRAFT's concept banks over many classes) and SAEs of the
# same size with 8 active features: 64 atoms for layer3, 128 for layer4. They are fitted on
# 32 random positions per image of the benchmark's images (a quick fit: the search's cost
# depends on the dictionary's size, not on how well it was fitted).
RESNET_LAYERS = {"layer3": 64, "layer4": 128}
RESNET_SAE_K = 8
RESNET_BATCH = 32


def neuron_units(layers=LAYERS) -> dict:
    return {(layer, "neuron"): None for layer in layers}


def timed(fns: dict, batches: list, repeats: int) -> dict:
    """Each function's best wall time over ``repeats`` interleaved rounds (shared machines),
    for the whole pass and summed per batch: a function is given the batches through a
    generator that notes when it hands each one out, so a batch's time runs from its hand-out
    to the next one's (the forward pass and all work on it), and each batch's best round
    counts. The per-batch sum is the steadier figure when other processes come and go. The
    order rotates between rounds, so that none always runs after another's allocations.
    Each function's last result is kept."""
    whole = dict.fromkeys(fns, float("inf"))
    per_batch = {name: [float("inf")] * len(batches) for name in fns}
    names, results = list(fns), {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each goes first once
            fn = fns[name]
            stamps: list[float] = []

            def feed(stamps=stamps):
                for batch in batches:
                    stamps.append(time.perf_counter())
                    yield batch

            start = time.perf_counter()
            results[name] = fn(feed())
            stamps.append(time.perf_counter())
            whole[name] = min(whole[name], stamps[-1] - start)
            for i, (a, b) in enumerate(itertools.pairwise(stamps)):
                per_batch[name][i] = min(per_batch[name][i], b - a)
    return {
        name: {"whole": whole[name], "per_batch": sum(per_batch[name]), "result": results[name]}
        for name in fns
    }


@torch.no_grad()
def search_throughput(
    model, layers: list[str], batches: list, dict_units: dict, nmf_slow: dict, repeats: int
) -> dict:
    """Bare forward passes, the neuron search and the search with dictionary features, best
    of ``repeats`` interleaved rounds; then NMF's fast path against its slow path."""
    n_images = sum(len(index) for index, _ in batches)

    def bare(feed):
        with LayerCapture(model, layers):  # the same hooks, nothing done with them
            for _, xb in feed:
                model(xb)

    def search(units):
        return lambda feed: ExemplarSearch(K_EXTREMES).fit(model, units, feed)

    units = {**neuron_units(layers), **dict_units}
    times = timed(
        {"bare": bare, "neurons": search(neuron_units(layers)), "all": search(units)},
        batches,
        repeats,
    )
    bare_s, neuron_s, all_s = (times[k]["per_batch"] for k in ("bare", "neurons", "all"))
    return {
        "n_images": n_images,
        "bare_forward_s": bare_s,
        "search_neurons_s": neuron_s,
        "fraction_neurons": bare_s / neuron_s,
        "search_with_dictionaries_s": all_s,
        "fraction_with_dictionaries": bare_s / all_s,
        "whole_pass": {
            "bare_forward_s": times["bare"]["whole"],
            "fraction_neurons": times["bare"]["whole"] / times["neurons"]["whole"],
            "fraction_with_dictionaries": times["bare"]["whole"] / times["all"]["whole"],
        },
        "nmf_agreement": nmf_agreement(
            model, layers, batches, times["all"]["result"], dict_units, nmf_slow
        ),
        "images_per_s_bare": n_images / bare_s,
        "images_per_s_search": n_images / neuron_s,
    }


def dictionaries(positions: dict, sizes: dict, **sae_kw) -> tuple[dict, dict]:
    """NMF and TopK SAE encoders per layer, and NMF's slow-path encoders (every iteration,
    ``transform_tol`` = 0), the reference for the fast path."""
    units, slow = {}, {}
    for layer, k in sizes.items():
        nmf = NMF(k, random_state=0).fit(positions[layer])
        units[(layer, "nmf")] = nmf.encode
        slow[(layer, "nmf")] = NMF(k, transform_tol=0.0).load_state(nmf.state()).encode
        units[(layer, "sae")] = TopKSAE(k, random_state=0, **sae_kw).fit(positions[layer]).encode
    return units, slow


@torch.no_grad()
def throughput(n_images: int, repeats: int) -> dict:
    demo = load_demo_model()
    model = demo.model
    x = demo_preprocess(demo.dataset.images[:n_images])  # N, 1, 28, 28
    n_images = len(x)  # the held-out images may be fewer
    batches = [
        (torch.arange(i, min(i + BATCH, n_images)), x[i : i + BATCH])
        for i in range(0, n_images, BATCH)
    ]
    positions = sample_positions(
        model,
        list(LAYERS),
        batches,
        per_image=8,
        max_samples=20000,
        generator=torch.Generator().manual_seed(0),
    )
    dict_units, nmf_slow = dictionaries(positions, dict.fromkeys(LAYERS, 16), k=4, epochs=5)
    return search_throughput(model, list(LAYERS), batches, dict_units, nmf_slow, repeats)


def resnet_images(n: int, seed: int = 0) -> torch.Tensor:
    """n procedural shapes at 224 px, each tinted with a random colour and normalised with
    ImageNet's statistics: (n, 3, 224, 224)."""
    gray = torch.from_numpy(procedural_dataset(n, seed=seed, size=224).images).float() / 255
    tint = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.2
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (gray[:, None] * tint - mean) / std  # N, 3, 224, 224


@torch.no_grad()
def resnet_throughput(n_images: int, repeats: int) -> dict:
    """The exemplar search on a ResNet-18 (random weights, BatchNorm statistics of the
    images) at 224 px, layer3 and layer4: neurons, and neurons with NMF and SAE features."""
    x = resnet_images(n_images)
    model = calibrate_batchnorm(resnet18(seed=0), x[:RESNET_BATCH])
    layers = list(RESNET_LAYERS)
    batches = [
        (torch.arange(i, min(i + RESNET_BATCH, n_images)), x[i : i + RESNET_BATCH])
        for i in range(0, n_images, RESNET_BATCH)
    ]
    positions = sample_positions(
        model,
        layers,
        batches,
        per_image=32,
        max_samples=20000,
        generator=torch.Generator().manual_seed(0),
    )
    start = time.perf_counter()
    dict_units, nmf_slow = dictionaries(positions, RESNET_LAYERS, k=RESNET_SAE_K, epochs=5)
    fit_s = time.perf_counter() - start
    out = search_throughput(model, layers, batches, dict_units, nmf_slow, repeats)
    return {
        "model": "resnet18 (random weights, BatchNorm calibrated), 224 px RGB",
        "parameters": sum(p.numel() for p in model.parameters()),
        "atoms_per_layer": RESNET_LAYERS,  # NMF and SAE alike
        "sae_active_features": RESNET_SAE_K,
        "batch_size": RESNET_BATCH,
        "fit_positions": len(positions[layers[0]]),
        "dictionary_fit_s": fit_s,
        **out,
    }


def nmf_agreement(
    model, layers: list[str], batches, a: ExemplarSearch, fast: dict, slow: dict
) -> dict:
    """The NMF encoder against its slow path on the benchmark images: the largest relative
    difference of the codes (one batch) and the share of top-k / bottom-k exemplar indices
    that agree (as sets, and in order); ``a`` is a search with the fast encoders, done."""
    x = batches[0][1]
    with LayerCapture(model, layers) as cap:
        model(x)
        codes_diff = max(
            float((fast[key](pos) - slow[key](pos)).norm() / slow[key](pos).norm().clamp(min=1e-12))
            for key in slow
            for pos in [to_positions(cap.outputs[key[0]])]  # B*H*W, C
        )
    b = ExemplarSearch(K_EXTREMES).fit(model, slow, batches)
    same_set, same_order, total = 0, 0, 0
    for key in slow:
        for side in ("top_indices_", "bottom_indices_"):
            ia, ib = getattr(a.extremes_[key], side), getattr(b.extremes_[key], side)  # U, k
            for ra, rb in zip(ia.tolist(), ib.tolist(), strict=True):
                same_set += len(set(ra) & set(rb))
                same_order += sum(p == q for p, q in zip(ra, rb, strict=True))
                total += len(rb)
    return {
        "codes_max_relative_difference": codes_diff,
        "exemplars_same_set": same_set / total,
        "exemplars_same_rank": same_order / total,
    }


def current_rss_kib() -> int:
    """Resident set size now (Linux /proc), KiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() // 1024


def memory_child(n_images: int) -> None:
    """Run in a child: stream n_images generated images through the search, print JSON."""
    demo = load_demo_model()
    model = demo.model

    rss = [current_rss_kib()]  # [peak so far]

    def batches():
        for i in range(0, n_images, BATCH):
            rss[0] = max(rss[0], current_rss_kib())
            b = min(BATCH, n_images - i)
            gen = torch.Generator().manual_seed(i)
            yield torch.arange(i, i + b), torch.rand(b, 1, 28, 28, generator=gen) * 2 - 1

    with torch.no_grad():
        model(torch.zeros(BATCH, 1, 28, 28))  # warm the allocator
    base = current_rss_kib()
    tracemalloc.start()
    subset = torch.arange(0, n_images, n_images // 2000)[:2000]
    search = ExemplarSearch(K_EXTREMES, subset=subset)
    search.fit(model, neuron_units(), batches())
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = max(rss[0], current_rss_kib())
    state = sum(e.nbytes() for e in search.extremes_.values())
    print(
        json.dumps(
            {
                "n_images": n_images,
                "rss_at_start_kib": base,
                "rss_peak_above_model_kib": peak - base,
                "tracemalloc_peak_kib": py_peak // 1024,
                "search_state_kib": state // 1024,
            }
        )
    )


def memory(n_images: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(n_images)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name: str, speed: dict) -> None:
    agree = speed["nmf_agreement"]
    print(
        f"{name}: bare {speed['bare_forward_s']:.2f} s, with neuron search "
        f"{speed['search_neurons_s']:.2f} s -> fraction {speed['fraction_neurons']:.2f}; "
        f"with NMF+SAE encoders {speed['search_with_dictionaries_s']:.2f} s "
        f"-> fraction {speed['fraction_with_dictionaries']:.2f} (whole passes: "
        f"{speed['whole_pass']['fraction_neurons']:.2f}, "
        f"{speed['whole_pass']['fraction_with_dictionaries']:.2f})\n"
        f"  NMF codes against the slow path: max relative difference "
        f"{agree['codes_max_relative_difference']:.1e}; top/bottom-{K_EXTREMES} exemplars: "
        f"{agree['exemplars_same_set']:.4f} the same images, {agree['exemplars_same_rank']:.4f} "
        "at the same rank"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    load_demo_model()  # train once (cached) before any timing
    n_speed = 2048 if args.quick else 10000
    n_resnet = 64 if args.quick else 512
    sizes = (5000, 20000) if args.quick else (20000, 200000)
    speed = throughput(n_speed, repeats=3 if args.quick else 5)
    report(f"demo CNN, {n_speed} images", speed)
    resnet = resnet_throughput(n_resnet, repeats=3)
    report(f"ResNet-18, {n_resnet} images", resnet)
    mem = [memory(n) for n in sizes]
    for m in mem:
        print(
            f"memory, {m['n_images']} images: "
            f"peak RSS +{m['rss_peak_above_model_kib'] / 1024:.1f} MiB "
            f"above the loaded model, tracemalloc peak {m['tracemalloc_peak_kib']} KiB, "
            f"search state {m['search_state_kib']} KiB"
        )
    growth = mem[1]["rss_peak_above_model_kib"] - mem[0]["rss_peak_above_model_kib"]
    print(
        json.dumps(
            {
                "quick": args.quick,
                "torch_threads": torch.get_num_threads(),
                "throughput": speed,
                "resnet18": resnet,
                "memory": mem,
                "rss_growth_kib": growth,
                "goal_fraction_met": speed["fraction_neurons"] >= 0.9,
                "goal_resnet18_met": min(
                    resnet["fraction_neurons"], resnet["fraction_with_dictionaries"]
                )
                >= 0.9,
            }
        )
    )


if __name__ == "__main__":
    main()
