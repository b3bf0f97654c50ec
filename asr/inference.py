"""From a model file and audio to text or a label: ``load_model``, ``transcribe``, ``classify``.

``transcribe(model, audio, options) -> Result`` is what the CLI, the recipes and the
tests call; without ``options`` it decodes as the model file says (its tuned beam
search and LM, else greedy), exactly as ``asr transcribe`` does. Decoders are kept on
the model, so a language model is loaded once however many files are transcribed.
Long files are read chunk by chunk (``asr.audio.iter_chunks``), so memory stays
bounded. Output formats are small writers in ``WRITERS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from asr.audio import iter_chunks, load_audio
from asr.checkpoint import ModelFile
from asr.data import BucketingBatchSampler, load_entry_audio, pad_sequence_1d
from asr.decoding import DecodingOptions, Word, make_decoder
from asr.device import resolve_device
from asr.errors import AsrError
from asr.features import FeatureExtractor
from asr.model import build_model
from asr.text import tokenizer_from_dict

MAX_DECODERS = 4  # decoders a model keeps for reuse (each may hold an LM and worker processes)


@dataclass(eq=False)
class Recognizer:
    """A CTC model with its front end and tokenizer, ready for inference."""

    net: torch.nn.Module
    features: FeatureExtractor
    tokenizer: object
    device: torch.device
    decoding: DecodingOptions = field(default_factory=DecodingOptions)  # the model file's default decoding
    provenance: dict = field(default_factory=dict)
    _decoders: dict = field(default_factory=dict, repr=False)

    @property
    def frame_shift(self) -> float:
        """Seconds per output frame."""
        return self.features.config.frame_shift * self.net.time_stride

    @torch.no_grad()
    def log_probs(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: (batch, samples) at the model's sample rate -> (log_probs (batch, frames, classes), lengths)."""
        feats, frames = self.features(audio.to(self.device), lengths.to(self.device))
        return self.net(feats, frames)

    def decoder(self, options: DecodingOptions | None = None):
        """The decoder for ``options`` (default: the model's), made once and kept for later calls."""
        options = options or self.decoding
        if options not in self._decoders:
            if len(self._decoders) >= MAX_DECODERS:
                self._decoders.pop(next(iter(self._decoders))).close()
            self._decoders[options] = make_decoder(options, self.tokenizer, self.frame_shift)
        return self._decoders[options]

    def close(self) -> None:
        """Release the kept decoders (their LMs and worker processes)."""
        while self._decoders:
            self._decoders.popitem()[1].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(eq=False)
class ClipClassifier:
    """A trained classifier (or ensemble) with its front end and labels, ready for inference."""

    net: torch.nn.Module
    features: FeatureExtractor
    labels: list[str]
    device: torch.device
    provenance: dict = field(default_factory=dict)

    @torch.no_grad()
    def log_probs(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio: (batch, samples) at the model's sample rate -> (batch, n_classes)."""
        feats, frames = self.features(audio.to(self.device), lengths.to(self.device))
        return self.net(feats, frames).float().cpu()


def from_model_file(model: ModelFile, device="cpu") -> Recognizer | ClipClassifier:
    device = resolve_device(device) if isinstance(device, str) else device
    net = build_model(model.model_config, model.members)
    try:
        net.load_state_dict(model.weights)
    except RuntimeError as exc:
        raise AsrError(f"the weights do not fit the model config ({str(exc).splitlines()[0][:200]})") from None
    net = net.to(device).eval()
    features = FeatureExtractor(model.feature_config).to(device).eval()
    if model.task == "classify":
        return ClipClassifier(net, features, list(model.labels), device, model.provenance)
    tokenizer = tokenizer_from_dict(model.tokenizer)
    if model.model_config.n_classes != tokenizer.vocab_size:
        raise AsrError(f"the model has {model.model_config.n_classes} classes but its tokenizer "
                       f"{tokenizer.vocab_size}")
    return Recognizer(net, features, tokenizer, device, model.decoding or DecodingOptions(), model.provenance)


def load_model(path, device="cpu") -> Recognizer | ClipClassifier:
    """Rebuild a recognizer or a classifier from its model file; nothing is hard-coded at load time.
    ``device``: "cpu", "cuda" or "auto"."""
    try:
        return from_model_file(ModelFile.load(path), device)
    except AsrError as exc:
        message = str(exc)
        raise AsrError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def load_recognizer(path, device="cpu") -> Recognizer:
    model = load_model(path, device)
    if not isinstance(model, Recognizer):
        raise AsrError(f"{path}: a classifier, not a speech recognition model (use asr classify)")
    return model


def load_classifier(path, device="cpu") -> ClipClassifier:
    model = load_model(path, device)
    if not isinstance(model, ClipClassifier):
        raise AsrError(f"{path}: a speech recognition model, not a classifier (use asr transcribe)")
    return model


# --------------------------------------------------------------------------- speech recognition

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
               chunk_seconds: float = 20.0) -> Result:
    """Transcribe a file path or a waveform tensor (samples,) at the model's sample rate (16 kHz
    unless its features say otherwise). Without ``options``: the model file's decoding (a
    recipe's tuned beam search and LM), else greedy."""
    decoder = model.decoder(options)
    rate = model.features.config.sample_rate
    if isinstance(audio, torch.Tensor):
        step = int(chunk_seconds * rate)
        chunks = [(audio[i: i + step], i / rate) for i in range(0, max(1, audio.numel()), step)]
    else:
        chunks = ((c.audio, c.offset) for c in iter_chunks(audio, chunk_seconds, sample_rate=rate))
    words: list[Word] = []
    duration = 0.0
    for samples, offset in chunks:
        duration = offset + samples.numel() / rate
        if samples.numel() < model.features.config.win_length:
            continue
        log_probs, lengths = model.log_probs(samples[None], torch.tensor([samples.numel()]))
        hyp = decoder.decode(log_probs.cpu(), lengths.cpu())[0]
        words += [Word(w.word, w.start + offset, w.end + offset, w.confidence) for w in hyp.words]
    return Result(" ".join(w.word for w in words), words, duration, _segments(words))


def run_batches(model: Recognizer | ClipClassifier, entries: list[dict], max_frames: int = 20000,
                progress: bool = False, desc: str = "decoding"):
    """Run a model's front end and network over manifest entries in length-bucketed batches, in a
    fixed order. Yields ``(indices into entries, network output)``; the network's modes stay as they are."""
    frame_shift, rate = model.features.config.frame_shift, model.features.config.sample_rate
    longest = max(int(e["duration"] / frame_shift) + 1 for e in entries)
    sampler = BucketingBatchSampler([e["duration"] for e in entries], max(max_frames, longest + 1), frame_shift,
                                    shuffle=False)
    batches = sampler.batches(0)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", leave=False)
    for indices in batches:
        audio, lengths = pad_sequence_1d([load_entry_audio(entries[i], rate) for i in indices])
        with torch.no_grad():
            feats, frames = model.features(audio.to(model.device), lengths.to(model.device))
            yield indices, model.net(feats, frames)


def iter_log_probs(model: Recognizer, entries: list[dict], max_frames: int = 20000, progress: bool = False):
    """``(indices into entries, log_probs (batch, frames, classes), lengths (batch,))`` on the CPU,
    batch by batch; decoding them more than once (to tune LM weights) needs no second pass."""
    for indices, (log_probs, lengths) in run_batches(model, entries, max_frames, progress):
        yield indices, log_probs.cpu(), lengths.cpu()


def decode_batches(decoder, batches, entries: list[dict]) -> dict[str, str]:
    """Decode ``iter_log_probs`` batches of ``entries`` (each with an ``id``): id -> hypothesis text."""
    return {entries[i]["id"]: hyp.text for indices, log_probs, lengths in batches
            for i, hyp in zip(indices, decoder.decode(log_probs, lengths))}


def recognize_entries(model: Recognizer, entries: list[dict], options: DecodingOptions | None = None,
                      max_frames: int = 20000, progress: bool = False) -> dict[str, str]:
    """Batch-decode manifest entries (each with an ``id``): id -> hypothesis text."""
    decoder = model.decoder(options or DecodingOptions())
    return decode_batches(decoder, iter_log_probs(model, entries, max_frames, progress), entries)


# --------------------------------------------------------------------------- classification

@dataclass
class Prediction:
    label: str
    probability: float
    top_k: list[tuple[str, float]]


def classify(model: ClipClassifier, audio, top_k: int = 1) -> Prediction:
    """Classify a file path or a waveform tensor (samples,) at the model's sample rate (16 kHz
    unless its features say otherwise)."""
    if not isinstance(audio, torch.Tensor):
        audio = load_audio(audio, model.features.config.sample_rate)
    probs = model.log_probs(audio[None], torch.tensor([audio.numel()]))[0].exp()
    values, indices = probs.topk(max(1, min(top_k, len(model.labels))))
    ranked = [(model.labels[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
    return Prediction(ranked[0][0], ranked[0][1], ranked)


def predict(model: ClipClassifier, entries: list[dict], max_frames: int = 20000,
            progress: bool = False) -> torch.Tensor:
    """Log-probs (len(entries), n_classes) for manifest entries, in their order (eval mode)."""
    model.net.eval()
    out = torch.zeros(len(entries), len(model.labels))
    for indices, log_probs in run_batches(model, entries, max_frames, progress, desc="classifying"):
        out[indices] = log_probs.float().cpu()
    return out


def format_prediction(prediction: Prediction, source: str, fmt: str) -> str:
    """One line: ``text`` is ``FILE<TAB>LABEL<TAB>PROB`` (and further label/prob pairs); ``json`` an object."""
    if fmt == "json":
        top = [{"label": label, "probability": round(p, 4)} for label, p in prediction.top_k]
        return json.dumps({"file": source, "label": prediction.label, "probability": round(prediction.probability, 4),
                           "top_k": top}) + "\n"
    return source + "".join(f"\t{label}\t{p:.4f}" for label, p in prediction.top_k) + "\n"


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


def write_tsv(result: Result, source: str) -> str:
    """whisper's tsv: a header, then start and end in integer milliseconds and the text of each segment."""
    return "start\tend\ttext\n" + "".join(
        f"{round(1000 * s.start)}\t{round(1000 * s.end)}\t{s.text.replace(chr(9), ' ')}\n" for s in result.segments)


WRITERS = {"txt": write_txt, "json": write_json, "srt": write_srt, "vtt": write_vtt, "tsv": write_tsv}
FORMATS = (*WRITERS, "all")  # "all": every format, as files


def write_result(result: Result, source, fmt: str, output_dir=None, name: str | None = None) -> str:
    """Format ``result``; with ``output_dir``, also save it as ``<name>.<fmt>`` there (``name``:
    the source's stem). ``fmt="all"`` writes every format and returns the text."""
    formats = list(WRITERS) if fmt == "all" else [fmt]
    texts = {f: WRITERS[f](result, str(source)) for f in formats}
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for f, text in texts.items():
            target = out / f"{name or Path(str(source)).stem}.{f}"
            target.parent.mkdir(parents=True, exist_ok=True)  # an id may be a path under a folder
            target.write_text(text, encoding="utf-8")
    return texts["txt" if fmt == "all" else fmt]
