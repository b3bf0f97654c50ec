"""CPU-dependent defaults: bfloat16 is used only where this machine multiplies it fast.

The slow-hardware path is forced on any machine: ``ASR_CPU_BF16=slow`` (what a CPU
without AVX-512 BF16 or AMX measures) or a monkeypatched check.
"""

import torch

import pytest

from asr import device, optim
from asr.errors import AsrError
from asr.optim import Muon, MuonAdamW, make_optimizer, orthogonalize


def test_the_bf16_check_measures_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("ASR_CPU_BF16", raising=False)
    speedup = device.bf16_speedup()
    assert speedup > 0
    assert device.bf16_is_fast("cpu") == (speedup >= 1.2)
    state = torch.get_rng_state()
    device.bf16_speedup.cache_clear()
    device.bf16_speedup()  # measuring leaves the global generator alone (training draws from it)
    assert torch.equal(state, torch.get_rng_state())
    for value, fast in (("slow", False), ("fast", True), (" Slow ", False)):
        monkeypatch.setenv("ASR_CPU_BF16", value)
        assert device.bf16_is_fast("cpu") is fast
    monkeypatch.setenv("ASR_CPU_BF16", "sometimes")
    with pytest.raises(AsrError, match="ASR_CPU_BF16 must be fast or slow"):
        device.bf16_is_fast("cpu")


def test_describe_names_the_cpu_its_capability_and_bf16(monkeypatch):
    monkeypatch.setenv("ASR_CPU_BF16", "slow")
    line = device.describe("cpu")
    assert device.cpu_model() in line and torch.backends.cpu.get_cpu_capability() in line
    assert "bfloat16 slow" in line and f"{torch.get_num_threads()} threads" in line


def test_our_muon_is_torchs_muon_in_bf16():
    """Same update, bit for bit, as torch.optim.Muon with the AdamW-matched step size."""
    torch.manual_seed(0)
    wide, tall = torch.randn(24, 72), torch.randn(72, 24)
    theirs = [torch.nn.Parameter(wide.clone()), torch.nn.Parameter(tall.clone())]
    ours = [torch.nn.Parameter(wide.clone()), torch.nn.Parameter(tall.clone())]
    a = torch.optim.Muon(theirs, lr=1e-2, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
    b = Muon(ours, lr=1e-2, weight_decay=0.01, ns_dtype=torch.bfloat16)
    for _ in range(4):
        grads = [torch.randn_like(wide), torch.randn_like(tall)]
        for p, q, g in zip(theirs, ours, grads):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    for p, q in zip(theirs, ours):
        assert torch.equal(p, q)
    assert a.state_dict()["state"][0].keys() == b.state_dict()["state"][0].keys()


def test_orthogonalize_in_fp32_flattens_the_spectrum():
    torch.manual_seed(0)
    m = torch.randn(96, 32) @ torch.diag(torch.logspace(0, -2, 32))
    out = orthogonalize(m, torch.float32)
    assert out.dtype == torch.float32 and out.shape == m.shape
    s = torch.linalg.svdvals(out)
    assert 0.3 < s.min() and s.max() < 1.3  # from a 100:1 spread of singular values to about one
    bf16 = orthogonalize(m, torch.bfloat16).float()
    assert (out - bf16).abs().max() < 0.05  # the same matrix, up to bfloat16's precision


@pytest.mark.parametrize("fast", [True, False])
def test_muon_runs_only_where_bf16_is_fast_unless_asked(monkeypatch, fast):
    """muon_precision "auto": Muon in bfloat16 where it is fast, AdamW instead elsewhere; "fp32" and
    "bf16" hold on any machine."""
    monkeypatch.setattr(optim, "bf16_is_fast", lambda _device: fast)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    opt = make_optimizer(model, "muon", 1e-2, 0.0, "cpu")
    if fast:
        assert isinstance(opt, MuonAdamW) and opt.muon.ns_dtype == torch.bfloat16
        assert optim.describe_optimizer(opt) == "muon (bf16 Newton-Schulz)"
    else:
        assert isinstance(opt, torch.optim.AdamW)
        assert optim.describe_optimizer(opt) == "adamw (instead of muon: bfloat16 is slow on this machine)"
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        forced = make_optimizer(model, "muon", 1e-2, 0.0, "cpu", precision)
        assert isinstance(forced, MuonAdamW) and forced.muon.ns_dtype == dtype
    assert optim.describe_optimizer(make_optimizer(model, "adamw", 1e-2, 0.0)) == "adamw"
    with pytest.raises(AsrError, match="unknown muon_precision"):
        make_optimizer(model, "muon", 1e-2, 0.0, "cpu", "fp16")


@pytest.mark.slow
def test_the_forced_slow_path_trains_and_says_so(monkeypatch, tmp_path, capsys, ctc_corpus, ctc_trainer):
    """No fast bfloat16: a Muon config trains with AdamW and says so in the log and the model file;
    Muon asked for in float32 learns as the bfloat16 path does; a probe far slower than the config
    expects names its likely cause."""
    monkeypatch.setenv("ASR_CPU_BF16", "slow")
    fallback = ctc_trainer(ctc_corpus, tmp_path / "fallback", max_steps=30, optimizer="muon")
    assert isinstance(fallback.optimizer, torch.optim.AdamW)
    fallback.run(progress=False)
    assert "optimizer adamw (instead of muon: bfloat16 is slow on this machine)" in capsys.readouterr().out
    provenance = torch.load(fallback.export(tmp_path / "model.pt"), weights_only=True)["provenance"]
    assert provenance["optimizer"].startswith("adamw (instead of muon") and provenance["steps"] == 30
    assert "bfloat16 slow" in provenance["machine"]
    losses = fallback.history["loss"]
    assert losses[-1] < 0.95 * losses[0], losses

    fp32 = ctc_trainer(ctc_corpus, tmp_path / "fp32", max_steps=30, optimizer="muon", muon_precision="fp32")
    fp32.run(progress=False)
    monkeypatch.setenv("ASR_CPU_BF16", "fast")
    fast = ctc_trainer(ctc_corpus, tmp_path / "fast", max_steps=30, optimizer="muon")
    assert fast.optimizer.muon.ns_dtype == torch.bfloat16 and fp32.optimizer.muon.ns_dtype == torch.float32
    fast.run(progress=False)
    monkeypatch.setenv("ASR_CPU_BF16", "slow")
    slow, quick = fp32.history["loss"], fast.history["loss"]
    assert abs(slow[-1] - quick[-1]) < 0.02 * quick[-1], (slow, quick)  # the same learning, in float32

    slow = ctc_trainer(ctc_corpus, tmp_path / "slow", max_steps=4, precision="bf16", time_budget_minutes=0.05,
                        expected_step_seconds=(1e-4, 2e-4))
    assert "precision bf16 on a CPU without fast bfloat16" in capsys.readouterr().err
    slow.run(progress=False)
    err = capsys.readouterr().err
    assert "far slower than the 0.0001-0.0002 s this config expects" in err
    assert "bfloat16 autocast on a CPU that multiplies bfloat16" in err


def test_a_probe_within_the_expected_range_says_nothing(tmp_path, capsys, ctc_corpus, ctc_trainer):
    trainer = ctc_trainer(ctc_corpus, tmp_path / "exp", max_steps=4, time_budget_minutes=0.05,
                           expected_step_seconds=(0.0, 60.0))
    trainer.run(progress=False)
    assert "far slower" not in capsys.readouterr().err
