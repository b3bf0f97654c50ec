#!/usr/bin/env bash
# Runs the README's user commands as written (after tools/setup.sh), in README
# order, so that the README cannot drift from the code. CI calls it; it takes as
# long as the demos (about 45 minutes on 2 cores; CI, set-up and tests included, took 50).
set -euo pipefail
cd "$(dirname "$0")/.."
set -x

# Quick start: the offline demo (synthesis, training, LM, tuning, evaluation)
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
tensorboard --inspect --logdir exp/demo/tensorboard   # README: tensorboard --logdir exp/demo/tensorboard

# Language models and beam search
bash tools/build_kenlm.sh
python -m asr.lm --text ../shared/data/text/lj-text-train.txt --order 4 --out exp/lm
asr transcribe exp/demo/data/LibriSpeech/test-synth/*/*/*-0002.flac --model exp/demo/model.pt \
    --decoder beam --lm exp/lm/lm.bin --beam-width 32 --format json
asr transcribe exp/demo/data/LibriSpeech/test-synth/*/*/*-0002.flac --model exp/demo/model.pt \
    --hotwords newgate --hotword-weight 8
python tools/bench_decoding.py --model exp/demo/model.pt --lm exp/lm/lm.bin

# Real speech: LJ Speech
python -m asr.recipes.ljspeech demo --exp-dir exp/ljspeech

# Keyword spotting and sound classification
python -m asr.recipes.fsdd demo --exp-dir exp/fsdd
asr classify ../shared/data/fsdd/recordings/3_george_0.wav ../shared/data/fsdd/recordings/7_jackson_1.wav \
    --model exp/fsdd/model.pt --top-k 3
asr classify ../shared/data/fsdd/recordings/3_george_0.wav --model exp/fsdd/model.pt --format json
asr classify ../shared/data/fsdd/recordings/3_george_0.wav ../shared/data/fsdd/recordings/3_george_1.wav \
    --model exp/fsdd/self_train/model.pt --top-k 2

# Measured results: CER per voice, the same test sentences spoken by each
python tools/voice_cer.py --model exp/demo/model.pt

# The model: training-step time, packed against padded BiGRU
python tools/bench_train_step.py
