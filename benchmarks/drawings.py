"""One-shot drawings (Boutin et al. 2024): training time, sampling speed, and each
regularizer's place on the originality-recognizability plane beside the reference drawings.

Trains, from scratch in a fresh cache, both critics and, for each of the six regularizers,
an autoencoder and its exemplar-conditioned latent diffusion model on the corpus's
background categories; draws ``per_category`` drawings of every evaluation category from one
exemplar; scores them (and the corpus's own drawings of those categories, ``human``) with
the critics: recognizability is N-way one-shot accuracy (chance 1/N), originality the
normalized distance to the exemplar. Everything runs exactly as `assay stimuli build` runs
it (stimuli.drawings.build), with one torch thread.

    python benchmarks/drawings.py                 # Hershey at 48 px, longer training
    python benchmarks/drawings.py --quick         # the demo's settings
    python benchmarks/drawings.py --omniglot DIR  # real human drawings as the reference
    python benchmarks/drawings.py --quick --plane plane.png   # and the plot

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stimuli.cache import seed_from  # noqa: E402
from stimuli.drawings.build import (  # noqa: E402
    HUMAN,
    REGULARIZERS,
    CorpusConfig,
    DrawingBuildConfig,
    DrawingBuilder,
    DrawingsConfig,
    load_corpus,
)

log = logging.getLogger("benchmarks.drawings")


def settings(args) -> tuple[dict, dict]:
    """Autoencoder and diffusion options: the demo's with --quick, longer otherwise."""
    if args.quick:
        return {}, {}
    return {"epochs": 10}, {"epochs": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--omniglot", type=Path, help="an Omniglot folder (human drawings)")
    parser.add_argument("--per-category", type=int, default=6)
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--plane", type=Path, help="write the originality-recognizability "
                        "plane (PNG) here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    autoencoder, diffusion = settings(args)
    corpus_config = (CorpusConfig(source="omniglot", path=args.omniglot) if args.omniglot
                     else CorpusConfig(source="hershey", size=48))
    with tempfile.TemporaryDirectory() as tmp:
        config = DrawingBuildConfig(
            name="benchmark", output=Path(tmp) / "set", cache_dir=Path(tmp) / "cache",
            corpus=corpus_config,
            drawings=DrawingsConfig(categories=None, per_category=args.per_category,
                                    ways=args.ways, autoencoder=autoencoder,
                                    diffusion=diffusion))
        result = run(DrawingBuilder(config))
    if args.plane:
        from stimuli.drawings.plane import plane

        plane({d: (result["originality"][d], result["recognizability"][d])
               for d in result["recognizability"]}, args.plane, reference=HUMAN)
        log.info("wrote %s", args.plane)
    print(json.dumps(result))


def run(builder: DrawingBuilder) -> dict:
    config = builder.config
    start = time.perf_counter()
    corpus = load_corpus(config.corpus, seed=config.seed, cache_dir=builder.cache_dir)
    background, evaluation = corpus.split("background"), corpus.split("evaluation")
    log.info("corpus %s: %d background drawings (%d categories), %d evaluation categories",
             corpus.name, len(background.images), len(background.categories),
             len(evaluation.categories))
    clock = time.perf_counter()
    originality, recognizability = builder.critics(background)
    critics_s = time.perf_counter() - clock
    chosen, exemplars, human = builder.sample(evaluation)
    drawers: dict[str, np.ndarray] = {HUMAN: human}
    ae_epoch, diffusion_epoch, rates = {}, {}, []
    for regularizer in REGULARIZERS:
        clock = time.perf_counter()
        autoencoder = builder.autoencoder(background, regularizer)
        ae_epoch[regularizer] = (time.perf_counter() - clock) / autoencoder.config.epochs
        clock = time.perf_counter()
        model = builder.diffusion(autoencoder, background, regularizer)
        diffusion_epoch[regularizer] = (time.perf_counter() - clock) / model.config.epochs
        clock = time.perf_counter()
        drawers[regularizer] = model.draw(exemplars, config.drawings.per_category,
                                          seed=seed_from(config.seed, "draw", regularizer))
        rates.append(len(exemplars) * config.drawings.per_category
                     / (time.perf_counter() - clock))
        log.info("%s: autoencoder %.1f s/epoch, diffusion %.1f s/epoch, %.0f drawings/s",
                 regularizer, ae_epoch[regularizer], diffusion_epoch[regularizer], rates[-1])
    train_minutes = (time.perf_counter() - start) / 60
    scores = builder.scores(drawers, exemplars, chosen, evaluation, originality,
                            recognizability)
    reference = scores[HUMAN]["recognizability"]
    ways = min(config.drawings.ways, len(evaluation.categories))
    return {
        "setup": {"corpus": corpus.name, "human_drawings": corpus.human,
                  "size": corpus.size, "background_drawings": len(background.images),
                  "evaluation_categories": len(evaluation.categories),
                  "categories_drawn": len(chosen), "per_category": config.drawings.per_category,
                  "ways": ways, "chance": round(1 / ways, 4), "threads": 1},
        "recognizability": {d: round(s["recognizability"], 4) for d, s in scores.items()},
        "originality": {d: round(s["originality"], 4) for d, s in scores.items()},
        "within_10_points_of_human": [
            r for r in REGULARIZERS if scores[r]["recognizability"] >= reference - 0.10],
        "drawings_per_s": round(float(np.median(rates)), 1),
        "train_minutes": round(train_minutes, 2),
        "critics_minutes": round(critics_s / 60, 2),
        "epoch_seconds": {"autoencoder": {r: round(v, 2) for r, v in ae_epoch.items()},
                          "diffusion": {r: round(v, 2) for r, v in diffusion_epoch.items()}},
    }


if __name__ == "__main__":
    main()
