#!/usr/bin/env bash
# The paper protocol over every dataset found under DATA (see benchmarks/paper_protocol.toml).
# Usage: bash benchmarks/paper_protocol.sh /data   (expects /data/ImageNet-C, /data/ImageNet/val,
# and any of /data/imagenet-r, imagenet-a, imagenetv2, imagenet-sketch as ImageFolder trees)
set -euo pipefail
DATA=${1:?usage: paper_protocol.sh DATA_DIR}
TB=".venv/bin/ttabench"
CFG=benchmarks/paper_protocol.toml
$TB run --config $CFG -e enigma --data-dir "$DATA" -o runs/paper-imagenetc
$TB fit runs/paper-imagenetc --estimator enigma --degree 2 -o runs/rn50-f.json
for name in imagenet-r imagenet-a imagenetv2 imagenet-sketch; do
  if [ -d "$DATA/$name" ]; then
    $TB run --config $CFG -e enigma -s imagefolder --data-dir "$DATA" \
      --set "suite.imagefolder.root=$DATA/$name" --set "suite.imagefolder.name=$name" \
      --set estimator.enigma.calibration=runs/rn50-f.json -o "runs/paper-$name"
  fi
done
$TB leaderboard runs/paper-* -o runs/paper-all
