#!/usr/bin/env bash
# The GPU accuracy runs on the bundled TikTok, side by side on one lent GPU: the improved preset
# without the adversarial part, with the exact discriminator and with the sampled critic, over
# three seeds, then one comparison table with paired tests (python -m recbole_mmssl.compare).
# Wheels and start as in benchmarks/device_check.sh; run it from the repository root:
#   OUT=/tmp/out bash benchmarks/device_accuracy.sh
# EPOCHS, SEEDS, LABELS and LIMIT_S (seconds each run may take) override the defaults. Results
# (tables, per-run result.json, learning curves, logs; not the checkpoints) are copied to $OUT.
set -uo pipefail
: "${OUT:?set OUT to the results folder}"
EPOCHS=${EPOCHS:-100}
SEEDS=${SEEDS:-"2022 2023 2024"}
LABELS=${LABELS:-"improved improved-exact improved-sampled"}
LIMIT_S=${LIMIT_S:-480}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
WORK=${WORK:-/tmp/accuracy}
mkdir -p "$WORK/configs" "$OUT/logs"
printf 'variant: improved\nepochs: %s\n' "$EPOCHS" > "$WORK/configs/improved.yaml"
for critic in exact sampled; do
    printf 'variant: improved\nepochs: %s\nuse_adversarial: True\ndiscriminator: %s\n' "$EPOCHS" "$critic" \
        > "$WORK/configs/improved-$critic.yaml"
done
runs=()
for label in $LABELS; do runs+=(--run "$label=MMSSL:$WORK/configs/$label.yaml"); done
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
for label in $LABELS; do
    for seed in $SEEDS; do  # one process per run; a restarted script resumes each from its last epoch
        timeout "$LIMIT_S" python3 -m recbole_mmssl.compare --run "$label=MMSSL:$WORK/configs/$label.yaml" \
            --dataset tiktok --seeds "$seed" --stopping_step=20 --show_progress=False --output "$WORK/runs" \
            > "$OUT/logs/$label-$seed.log" 2>&1 &
    done
done
wait
# every finished run is skipped: this only reads them and writes the table
# shellcheck disable=SC2086
timeout 120 python3 -m recbole_mmssl.compare "${runs[@]}" --dataset tiktok --seeds $SEEDS --stopping_step=20 \
    --show_progress=False --output "$WORK/runs" > "$OUT/logs/table.log" 2>&1
(cd "$WORK/runs" && find . \( -name '*.json' -o -name '*.csv' -o -name '*.md' -o -name '*.png' -o -name '*.npz' \
    -o -name 'log.txt' \) -exec cp --parents {} "$OUT/" \;)
tail -30 "$OUT/logs/table.log"
