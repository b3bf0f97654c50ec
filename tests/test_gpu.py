"""Mixed precision on CUDA: runs only where a GPU is present."""

import pytest
import torch

from test_training import corpus, make_trainer  # noqa: F401

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_training_steps(corpus, tmp_path, precision):  # noqa: F811
    trainer = make_trainer(corpus, tmp_path, max_steps=4, precision=precision, device="cuda")
    assert trainer.device.type == "cuda"
    trainer.run(progress=False)
    assert trainer.step == 4
    assert all(torch.isfinite(torch.tensor(trainer.history["loss"])))
    assert trainer.scaler.is_enabled() == (precision == "fp16")
