#!/usr/bin/env bash
# Trains the shipped defaults from a clean checkout on the CPU, each stage resumable: the codec
# (400 steps), the matting decoder (600 steps), the generator's codec (1250 of a 2000-step
# schedule) and the prompt generator (3000 steps at 128²),
# copies them to models/default/ and prints the validation table. Ship the decoder only if it
# beats colour keying on every background kind (README, Training). Times measured on this
# 2-core machine are in models/README.md. Usage: bash packaging/train-defaults.sh [WORK_DIR]
# Add --cuda to ILDIFF_TRAIN_FLAGS (and build with --features cuda) to train on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-runs}"
flags="${ILDIFF_TRAIN_FLAGS:-}"
mkdir -p "$work"
if [ ! -d "$work/data/art" ]; then
    bash packaging/fetch-training-data.sh "$work/data"
fi
cargo build --release --bin ildiff
ildiff=target/release/ildiff
data=(--art "$work/data/art" --photos "$work/data/photos")
# Resumable: rerunning the script carries each stage on from its last checkpoint.
$ildiff train codec -o "$work/codec" --steps 400 --batch 4 --frames 2 --size 128 --lr 2e-3 \
    --warmup 30 --checkpoint-every 100 --workers 1 --seed 1 "${data[@]}" --resume $flags
$ildiff train decoder -o "$work/default" --codec "$work/codec/codec.safetensors" \
    --steps 600 --batch 4 --frames 6 --size 128 --lr 2e-3 --warmup 40 --checkpoint-every 50 \
    --workers 1 --seed 7 --w-alpha 0.2 --w-mse 0 --w-psnr 0.05 --w-grad 0.5 "${data[@]}" --resume $flags
# The generator's own codec, trained on what it paints (stickers over the magenta key).
$ildiff train codec -o "$work/gcodec" --over-key 255,0,255 --fg-weight 3 --channels 32,64,128 \
    --steps 2000 --stop-after 1250 --batch 4 --frames 2 --size 128 --lr 2e-3 --warmup 50 \
    --checkpoint-every 250 --workers 1 --seed 1 --art "$work/data/art" --resume $flags
# The prompt generator: the artwork of 10 subjects, zero-terminal-SNR schedule with v-prediction
# (the trainer's default --schedule).
$ildiff train generator -o "$work/gen10z" --codec "$work/gcodec/codec.safetensors" --art "$work/data/art" \
    --art-share 0.9 --art-subjects heart,star,cat,face,fish,flower,dog,sun,moon,cloud --size 128 \
    --frames 16 --batch 2 --steps 3000 --lr 8e-4 --warmup 100 --checkpoint-every 100 --workers 1 \
    --seed 1 --resume $flags
mkdir -p models/default
cp "$work/default/ildiff.safetensors" models/default/ildiff.safetensors
cp "$work/gen10z/generator.safetensors" models/default/generator.safetensors
$ildiff train validate --model default=models/default/ildiff.safetensors --keying --clips 96 \
    --size 128 --frames 8 "${data[@]}"
