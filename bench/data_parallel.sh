#!/usr/bin/env bash
# One device against two, side by side: `attnlab bench --only train` on the nanoGPT CPU recipe,
# alternating rounds so both see the same machine load. Usage: bench/data_parallel.sh DEVICES
# [ROUNDS], e.g. bench/data_parallel.sh flex,flex 3 or bench/data_parallel.sh cuda:0,cuda:1.
set -euo pipefail
devices=${1:?usage: bench/data_parallel.sh DEVICES [ROUNDS]}
rounds=${2:-3}
attnlab=${ATTNLAB:-target/release/attnlab}
one=${devices%%,*}
for round in $(seq "$rounds"); do
  for list in "$one" "$devices"; do
    echo "== round $round, --devices $list"
    "$attnlab" bench --only train --variants softmax,delta:gated --steps 20 --warmup 3 \
      --devices "$list" | grep -E "^(attnlab bench|cpu:|softmax|delta)"
  done
done
