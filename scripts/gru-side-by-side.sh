#!/usr/bin/env bash
# Training speed of the sequence VAE (train --arch gru) next to the same model in PyTorch on
# this machine's CPU (scripts/torch_gru.py), on the same molecules and batches of the same
# size, alternating the two ROUNDS times; medians of target tokens/s and their ratio.
# Usage (from the project root, after `cargo build --release`):
#   scripts/gru-side-by-side.sh [ROUNDS] [BATCH] [STEPS] [HIDDEN E,D] [LATENT] [LAYERS]
# Needs the PyTorch venv of ../shared/peers/side-by-side.sh (~/.cache/vae-peers/venv).
set -euo pipefail
rounds=${1:-3} batch=${2:-512} steps=${3:-3} hidden=${4:-256,512} latent=${5:-128} layers=${6:-3}
bin=${VAE_GPU_BIN:-target/release/vae-gpu}
py=${VAE_PEERS_VENV:-$HOME/.cache/vae-peers/venv}/bin/python
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ours=() theirs=()
for _ in $(seq "$rounds"); do
    out=$(mktemp -d)
    ours+=("$("$bin" --json train --arch gru --batch-size "$batch" --hidden "$hidden" --latent "$latent" \
        --decoder-layers "$layers" --bench-steps "$steps" --out "$out/run" 2>/dev/null \
        | sed -n 's/.*"tokens_per_s":\([0-9.e+]*\).*/\1/p')")
    rm -rf "$out"
    theirs+=("$("$py" scripts/torch_gru.py bench --batch "$batch" --steps "$steps" --hidden "$hidden" \
        --latent "$latent" --layers "$layers" --threads "$(nproc)" | sed -n 's/.*"tokens_per_s": \([0-9.e+]*\).*/\1/p')")
done
a=$(printf '%s\n' "${ours[@]}" | median)
b=$(printf '%s\n' "${theirs[@]}" | median)
printf 'gru batch %s hidden %s latent %s layers %s: vae-gpu %.0f, PyTorch %.0f target tokens/s, ratio %.2f\n' \
    "$batch" "$hidden" "$latent" "$layers" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}')"
echo "medians of $rounds rounds; device: $("$bin" info 2>/dev/null | sed -n 's/^\* = used with these options: //p'); CPU: $(lscpu | sed -n 's/^Model name: *//p')"
