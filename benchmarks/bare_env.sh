# Sourced by the GPU scripts (gpu_bench.sh, gpu_check.sh) from the repository root.
# Chooses Python ($PYTHON, else the repository's .venv when there is one, else python3) and
# makes ttabench and ttabench-enigma importable with their plugin entry points where they are
# not installed (a bare GPU machine: python3 with torch, nothing can be fetched): the wheels in
# .whl/ (the third-party ones benchmarks/gpu_check.sh names) and then the two projects of this
# checkout are installed with pip, offline, into $TTABENCH_SITE (default /tmp/ttabench-site),
# which goes first on PYTHONPATH.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON

ensure_packages() {
  if "$PYTHON" -c "import importlib.metadata as m; m.version('ttabench'); m.version('ttabench-enigma')" \
      2>/dev/null; then
    return 0
  fi
  local site=${TTABENCH_SITE:-/tmp/ttabench-site}
  mkdir -p "$site"
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .whl/*.whl
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade \
    --target "$site" ./host . || return 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}
