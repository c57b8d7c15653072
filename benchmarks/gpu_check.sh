#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one PASS/FAIL line per step, facts in OUT/.
#
#   bash benchmarks/gpu_check.sh OUT          # one CUDA device; under 7 minutes on an H100
#   bash benchmarks/gpu_check.sh --cpu OUT    # the same steps on the CPU (CI runs this path)
#
# Self-contained on a bare machine that has this repository and python3 with torch: synthetic
# data and random weights only, nothing is downloaded. benchmarks/bare_env.sh installs the two
# projects of this checkout offline (pip, setuptools) when they are not installed, after the
# wheels in .whl/. Besides torch the check imports torchvision, timm, numpy, scipy, pandas,
# scikit-learn, matplotlib, pillow, opencv, click, tqdm, filelock and safetensors (the
# workplace's CUDA image has them all), POT (the `ot` module, for COT and COTT) and pydantic
# (the record schemas), which the image lacks: carry them as wheels. On a machine with network,
# in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl pot==0.9.7.post1 pydantic==2.14.3 \
#     pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing-extensions==4.16.0
# (and any other of the modules above that a machine lacks; all of them fit in 64 MiB).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bare_env.sh
if ! ensure_packages; then
  echo "FAIL environment: ttabench and ttabench-enigma are not installed and could not be" \
       "installed offline from this checkout (needs pip and setuptools)"
  exit 1
fi
missing=$("$PYTHON" - <<'PY'
import importlib.util
need = ["torch", "torchvision", "timm", "numpy", "scipy", "pandas", "sklearn", "matplotlib",
        "PIL", "cv2", "click", "tqdm", "filelock", "safetensors", "ot", "pydantic"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "FAIL environment: missing Python modules: $missing (carry their wheels in .whl/, see" \
       "the head of benchmarks/gpu_check.sh)"
  exit 1
fi
limit=540  # the GPU path should end within 7 minutes (its last line says); the CPU path (CI, 2 shared cores) may take longer
case " $* " in *" --cpu "*) limit=1200 ;; esac
exec timeout "$limit" "$PYTHON" benchmarks/gpu_check.py "$@"
