"""One-shot drawings (Boutin et al. 2024, "Latent representation matters: human-like sketches
in one-shot drawing tasks"): a corpus of categories (corpus.py), regularized autoencoders
and an exemplar-conditioned latent diffusion model that draw a new category from one
exemplar, critics that score drawings for originality and recognizability, and the
stimulus sets human studies of them use.

Images throughout are uint8 (N, S, S) arrays with ink 255 on paper 0 (the models see them
as float in [0, 1]); participants see them as dark ink on white.
"""
