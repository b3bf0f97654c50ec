"""asr: end-to-end CTC speech recognition.

    >>> import asr
    >>> model = asr.load_model("exp/demo/model.pt")
    >>> asr.transcribe(model, "speech.flac").text

The heavy modules (torch) are imported on first use, so ``asr --help`` is quick.
"""

__version__ = "0.1.0"

__all__ = ["DecodingOptions", "Result", "load_model", "transcribe", "__version__"]


def __getattr__(name):
    if name == "DecodingOptions":
        from asr.decoding import DecodingOptions

        return DecodingOptions
    if name in ("Result", "load_model", "transcribe"):
        from asr import inference as module

        return getattr(module, name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")
