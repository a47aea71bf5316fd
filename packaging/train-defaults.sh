#!/usr/bin/env bash
# Trains the shipped defaults from a clean checkout on the CPU, each stage resumable: the codec
# (400 steps), the matting decoder (600 steps, then two plate-prior fine-tunes at 256²), the generator's codec (1250 of a 2000-step
# schedule) and the prompt generator (on a CUDA GPU with PyTorch, 256² as shipped; else 3000 CPU
# steps at 128²),
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
# The plate-prior default: fine-tunes at 256², 16 frames from the key-prior decoder (its
# conv_in widened with zeros for the plate inputs), as models/README.md records. Each stage:
# plate_tune OUT INIT, then its own steps, rate, checkpoints and seed.
plate_tune() {
    local out=$1 init=$2
    shift 2
    $ildiff train decoder -o "$work/$out" --init "$init" --plate-prior --size 256 --frames 16 \
        --batch 1 --workers 1 --w-alpha 0.2 --w-mse 0 --w-psnr 0.05 --w-grad 0.5 \
        "${data[@]}" --art-share 0.9 "$@" --resume $flags
}
plate_tune plate1 "$work/default/ildiff.safetensors" --steps 1200 --stop-after 250 --lr 1e-3 \
    --warmup 20 --checkpoint-every 25 --seed 11
plate_tune plate2 "$work/plate1/ildiff.safetensors" --steps 1000 --lr 1e-3 --warmup 20 \
    --checkpoint-every 25 --seed 12
# 120 steps with the key ramp that ends at 0.2-0.3 (the code's KeyPrior::plate(); plate2's
# config still carries the older 0.6).
plate_tune plate4 "$work/plate2/ildiff.safetensors" --steps 120 --lr 3e-4 --warmup 10 \
    --checkpoint-every 20 --seed 14
# With each pixel's ramp ending where its part reaches (LocalRamp, 2026-12-07's eleventh
# session): 600 steps, then 200 more once a part had to stand past the border's noise too.
plate_tune plate6 "$work/plate4/ildiff.safetensors" --steps 600 --lr 3e-4 --warmup 10 \
    --checkpoint-every 50 --seed 16
plate_tune plate7 "$work/plate6/ildiff.safetensors" --steps 200 --lr 3e-4 --warmup 10 \
    --checkpoint-every 20 --seed 17
# 1 500 steps of an 1 800-step schedule on the same code (2026-12-07's twelfth session).
plate_tune plate8 "$work/plate7/ildiff.safetensors" --steps 1800 --stop-after 1500 --lr 3e-4 \
    --warmup 10 --checkpoint-every 50 --seed 18
# The generator's own codec, trained on what it paints (stickers over the magenta key).
$ildiff train codec -o "$work/gcodec" --over-key 255,0,255 --fg-weight 3 --channels 32,64,128 \
    --steps 2000 --stop-after 1250 --batch 4 --frames 2 --size 128 --lr 2e-3 --warmup 50 \
    --checkpoint-every 250 --workers 1 --seed 1 --art "$work/data/art" --resume $flags
# The prompt generator: the artwork of 10 subjects, zero-terminal-SNR schedule with v-prediction
# (the trainer's default --schedule). The shipped one was trained at 256² on a GPU by the PyTorch
# port (packaging/gpu/train_generator.py) from a kit this binary writes; without a CUDA GPU and
# PyTorch the CPU trainer makes the older 128² recipe instead (models/README.md has both).
subjects=heart,star,cat,face,fish,flower,dog,sun,moon,cloud
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    $ildiff train generator -o "$work/kit256" --export-kit --codec "$work/gcodec/codec.safetensors" \
        --art "$work/data/art" --art-share 1 --art-subjects "$subjects" --size 256 --frames 16 --seed 1
    python3 packaging/gpu/train_generator.py "$work/kit256" "$work/gpu1" --minutes 8 --batch 32 \
        --lr 1e-3 --est-steps 1114 --save-every 60
    python3 packaging/gpu/train_generator.py "$work/kit256" "$work/gpu2" --resume "$work/gpu1" \
        --minutes 3.7 --est-steps 1250 --warmup 50 --batch 32 --lr 4e-4 --save-every 50 --seed 2
    generator="$work/gpu2/generator.safetensors"
else
    $ildiff train generator -o "$work/gen10z" --codec "$work/gcodec/codec.safetensors" --art "$work/data/art" \
        --art-share 0.9 --art-subjects "$subjects" --size 128 \
        --frames 16 --batch 2 --steps 3000 --lr 8e-4 --warmup 100 --checkpoint-every 100 --workers 1 \
        --seed 1 --resume $flags
    generator="$work/gen10z/generator.safetensors"
fi
mkdir -p models/default
cp "$work/plate8/ildiff.safetensors" models/default/ildiff.safetensors
cp "$generator" models/default/generator.safetensors
$ildiff train validate --model previous="$work/default/ildiff.safetensors" \
    --model default=models/default/ildiff.safetensors --keying --clips 24 --size 256 --frames 16 \
    "${data[@]}" --art-share 1 --seed 1 --degradations gif --per-clip
