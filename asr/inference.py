"""From a model file and audio to text: ``load_model`` and ``transcribe``.

``transcribe(model, audio, options) -> Result`` is what the CLI, the recipes
and the tests call. Long files are read chunk by chunk (``asr.audio.iter_chunks``),
so memory stays bounded. Output formats are small writers in ``WRITERS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from asr import checkpoint
from asr.audio import SAMPLE_RATE, iter_chunks
from asr.data import BucketingBatchSampler, SpeechDataset, collate
from asr.decoding import DecodingOptions, Word, make_decoder
from asr.errors import AsrError
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import CTCModel, ModelConfig
from asr.text import tokenizer_from_dict


@dataclass
class Recognizer:
    """A CTC model with its front end and tokenizer, ready for inference."""

    net: CTCModel
    features: FeatureExtractor
    tokenizer: object
    device: torch.device
    extra: dict = field(default_factory=dict)  # e.g. tuned decoding defaults

    @property
    def frame_shift(self) -> float:
        """Seconds per output frame."""
        return self.features.config.frame_shift * self.net.time_stride

    @torch.no_grad()
    def log_probs(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: (batch, samples) at 16 kHz -> (log_probs (batch, frames, classes), lengths)."""
        feats, frames = self.features(audio.to(self.device), lengths.to(self.device))
        return self.net(feats, frames)


def recognizer_from_checkpoint(data: dict, device="cpu") -> Recognizer:
    if data.get("task", "ctc") != "ctc":
        raise AsrError(f"this checkpoint is a {data.get('task')!r} model, not a speech recognition model")
    tokenizer = tokenizer_from_dict(data["tokenizer"])
    config = ModelConfig.from_dict(data["model_config"])
    if config.n_classes != tokenizer.vocab_size:
        raise AsrError(f"model has {config.n_classes} classes but its tokenizer {tokenizer.vocab_size}")
    net = CTCModel(config)
    net.load_state_dict(data["model"])
    device = torch.device(device)
    features = FeatureExtractor(FeatureConfig(**data["feature_config"]))
    return Recognizer(net.to(device).eval(), features.to(device).eval(), tokenizer, device,
                      dict(data.get("extra", {})))


def load_model(path, device="cpu") -> Recognizer:
    """Rebuild a recognizer from a checkpoint; nothing is hard-coded at load time."""
    return recognizer_from_checkpoint(checkpoint.load(path), device)


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Result:
    text: str
    words: list[Word]
    duration: float
    segments: list[Segment] = field(default_factory=list)


def _segments(words: list[Word], max_words: int = 12, max_seconds: float = 7.0, gap: float = 0.6) -> list[Segment]:
    """Group words into caption-sized segments."""
    segments: list[list[Word]] = []
    for word in words:
        if (not segments or len(segments[-1]) >= max_words or word.start - segments[-1][-1].end > gap
                or word.end - segments[-1][0].start > max_seconds):
            segments.append([])
        segments[-1].append(word)
    return [Segment(s[0].start, s[-1].end, " ".join(w.word for w in s)) for s in segments]


def transcribe(model: Recognizer, audio, options: DecodingOptions | None = None,
               chunk_seconds: float = 20.0, decoder=None) -> Result:
    """Transcribe a file path or a 16 kHz waveform tensor (samples,)."""
    options = options or DecodingOptions()
    decoder = decoder or make_decoder(options, model.tokenizer, model.frame_shift)
    if isinstance(audio, torch.Tensor):
        step = int(chunk_seconds * SAMPLE_RATE)
        chunks = [(audio[i: i + step], i / SAMPLE_RATE) for i in range(0, max(1, audio.numel()), step)]
    else:
        chunks = ((c.audio, c.offset) for c in iter_chunks(audio, chunk_seconds))
    words: list[Word] = []
    duration = 0.0
    for samples, offset in chunks:
        duration = offset + samples.numel() / SAMPLE_RATE
        if samples.numel() < model.features.config.win_length:
            continue
        log_probs, lengths = model.log_probs(samples[None], torch.tensor([samples.numel()]))
        hyp = decoder.decode(log_probs.cpu(), lengths.cpu())[0]
        words += [Word(w.word, w.start + offset, w.end + offset, w.confidence) for w in hyp.words]
    return Result(" ".join(w.word for w in words), words, duration, _segments(words))


def iter_log_probs(model: Recognizer, entries: list[dict], max_frames: int = 20000, progress: bool = False):
    """Run the model over manifest entries in length-bucketed batches.

    Yields ``(indices into entries, log_probs (batch, frames, classes), lengths (batch,))``
    on the CPU; decoding them more than once (e.g. to tune LM weights) needs no second pass.
    """
    longest = max(e["duration"] for e in entries)
    sampler = BucketingBatchSampler([e["duration"] for e in entries], max(max_frames, int(longest * 100) + 1),
                                    shuffle=False)
    dataset = SpeechDataset(entries, model.tokenizer)
    batches = sampler.batches(0)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="decoding", unit="batch", leave=False)
    for indices in batches:
        batch = collate([dataset[i] for i in indices])
        log_probs, lengths = model.log_probs(batch.audio, batch.audio_lengths)
        yield indices, log_probs.cpu(), lengths.cpu()


def decode_batches(decoder, batches, entries: list[dict]) -> dict[str, str]:
    """Decode ``iter_log_probs`` batches of ``entries`` (each with an ``id``): id -> hypothesis text.

    ``batches`` may be a list kept from one pass of the model, to decode it again
    with other decoders or LM weights."""
    return {entries[i]["id"]: hyp.text for indices, log_probs, lengths in batches
            for i, hyp in zip(indices, decoder.decode(log_probs, lengths))}


def recognize_entries(model: Recognizer, entries: list[dict], decoder=None, max_frames: int = 20000,
                      progress: bool = False) -> dict[str, str]:
    """Batch-decode manifest entries (each with an ``id``): id -> hypothesis text."""
    decoder = decoder or make_decoder(DecodingOptions(), model.tokenizer, model.frame_shift)
    return decode_batches(decoder, iter_log_probs(model, entries, max_frames, progress), entries)


# --------------------------------------------------------------------------- writers

def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def write_txt(result: Result, source: str) -> str:
    return result.text + "\n"


def write_json(result: Result, source: str) -> str:
    return json.dumps({
        "file": source, "text": result.text, "duration": round(result.duration, 3),
        "words": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(w).items()}
                  for w in result.words],
    }) + "\n"


def write_srt(result: Result, source: str) -> str:
    return "".join(f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n\n"
                   for i, s in enumerate(result.segments, 1))


def write_vtt(result: Result, source: str) -> str:
    return "WEBVTT\n\n" + "".join(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n\n"
                                  for s in result.segments)


WRITERS = {"txt": write_txt, "json": write_json, "srt": write_srt, "vtt": write_vtt}


def write_result(result: Result, source, fmt: str, output_dir=None) -> str:
    """Format ``result``; with ``output_dir``, also save it as ``<stem>.<fmt>`` there."""
    text = WRITERS[fmt](result, str(source))
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{Path(str(source)).stem}.{fmt}").write_text(text, encoding="utf-8")
    return text
