#!/usr/bin/env bash
# Runs the README's user commands as written (after tools/setup.sh), so that the
# README cannot drift from the code. CI calls it; it takes as long as the demos.
set -euo pipefail
cd "$(dirname "$0")/.."
set -x

# Quick start: the offline demo (synthesis, training, evaluation)
python -m asr.recipes.librispeech demo

# Using a model
asr transcribe exp/demo/data/LibriSpeech/test-synth/*/*/*-0000.flac --model exp/demo/model.pt
asr transcribe exp/demo/data/LibriSpeech/test-synth/*/*/*-0001.flac --model exp/demo/model.pt --format json
asr transcribe ../shared/data/ljspeech/LJSpeech-1.1/wavs/LJ002-0001.wav --model exp/demo/model.pt --format srt \
    --output-dir exp/demo/transcripts
asr score --ref exp/demo/results/test-synth/ref.txt --hyp exp/demo/results/test-synth/hyp-greedy.txt --metric wer
asr score --ref exp/demo/results/test-synth/ref.txt --hyp exp/demo/results/test-synth/hyp-greedy.txt --metric cer \
    --details exp/demo/results/test-synth/details.txt
asr info seed
asr info exp/demo/model.pt
tensorboard --inspect --logdir exp/demo/tensorboard | head -n 20
