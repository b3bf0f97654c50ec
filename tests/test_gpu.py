"""Mixed precision on CUDA: runs only where a GPU is present."""

import pytest
import torch


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_training_steps(ctc_corpus, tmp_path, precision, ctc_trainer):
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=4, precision=precision, device="cuda")
    assert trainer.device.type == "cuda"
    trainer.run(progress=False)
    assert trainer.step == 4
    assert all(torch.isfinite(torch.tensor(trainer.history["loss"])))
    assert trainer.scaler.is_enabled() == (precision == "fp16")


@pytest.fixture
def no_tf32():
    """cuDNN computes fp32 GRUs in TF32 by default (10-bit mantissas): off, to compare two paths exactly."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def test_bigru_padded_path_matches_packed_sequences_on_cuda(no_tf32, padded_and_packed):
    """The padded path (the default on every device) gives cuDNN's packed GRU's outputs and gradients."""
    from asr.model import BiGRU

    torch.manual_seed(0)
    layer = BiGRU(16, 32, dropout=0.0).cuda()
    assert layer.pack is False
    runs = padded_and_packed(layer, torch.randn(5, 40, 16, device="cuda"), torch.tensor([40, 17, 1, 33, 25]))
    (ours, ours_grad, ours_grads), (reference, reference_grad, reference_grads) = runs
    assert (ours[1, 17:] == 0).all() and (ours[2, 1:] == 0).all()
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(ours_grads, reference_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
