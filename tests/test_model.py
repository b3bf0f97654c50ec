import pytest
import torch

from asr.model import CTCModel, Encoder, count_parameters, named_config


def test_seed_config_parameter_count():
    assert count_parameters(CTCModel(named_config("seed"))) == 23_705_373


def tiny_config(**kw):
    return named_config("small", n_mels=16, cnn_channels=4, n_res_blocks=1, rnn_dim=8, n_rnn_layers=2,
                        classifier_dim=8, dropout=0.0, **kw)


def test_shapes_and_lengths_come_from_the_layers():
    model = CTCModel(tiny_config(time_stride=3)).eval()
    feats = torch.randn(2, 16, 31)
    log_probs, lengths = model(feats, torch.tensor([31, 20]))
    assert log_probs.shape == (2, 11, 29)
    assert lengths.tolist() == [11, 7]  # floor((n + 2 - 3) / 3) + 1
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 11), atol=1e-5)


def test_every_gru_layer_sees_each_utterance_alone():
    """Batch-major order everywhere: an utterance's output does not depend on its batch mates
    or on padding (a layer fed time-major would mix utterances across the batch)."""
    torch.manual_seed(0)
    model = CTCModel(tiny_config()).eval()
    a, b = torch.randn(1, 16, 40), torch.randn(1, 16, 24)
    alone_a, _ = model(a, torch.tensor([40]))
    alone_b, len_b = model(b, torch.tensor([24]))
    batch = torch.zeros(2, 16, 40)
    batch[0], batch[1, :, :24] = a[0], b[0]
    both, lengths = model(batch, torch.tensor([40, 24]))
    assert torch.allclose(both[0], alone_a[0], atol=1e-5)
    n = int(len_b)
    assert torch.allclose(both[1, :n], alone_b[0, :n], atol=1e-5)


def test_encoder_output_dim():
    enc = Encoder(tiny_config())
    out, lengths = enc(torch.randn(3, 16, 20), torch.tensor([20, 20, 10]))
    assert out.shape[-1] == enc.output_dim == 16


def test_fused_recurrence_gradients_are_exact():
    """BiGRURecurrence's hand-written backward against finite differences (float64)."""
    from asr.model import BiGRURecurrence

    torch.manual_seed(0)
    gi = torch.randn(2, 5, 3, 12, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(2, 12, 4, dtype=torch.float64, requires_grad=True)
    b_hh = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BiGRURecurrence.apply, (gi, w_hh, b_hh))


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_fused_bigru_matches_packed_sequences(dtype, atol, padded_and_packed):
    """The fused path gives the packed GRU's outputs and gradients, padding ignored."""
    from asr.model import BiGRU

    torch.manual_seed(0)
    layer = BiGRU(6, 5, dropout=0.0).to(dtype)
    x, lengths = torch.randn(4, 9, 6, dtype=dtype), torch.tensor([9, 4, 1, 7])
    assert layer.fused  # the default when training on a CPU
    fused, reference = padded_and_packed(layer, x, lengths)
    for mine, theirs in zip(fused[:2] + tuple(fused[2]), reference[:2] + tuple(reference[2])):
        assert torch.allclose(mine, theirs, atol=atol, rtol=0)
    assert (fused[0][1, 4:] == 0).all() and (fused[0][2, 1:] == 0).all()


def test_bigru_on_padded_batches_matches_packed_sequences(padded_and_packed):
    """Each direction runs on the padded batch; outputs and gradients must be those of the
    packed GRU with the same weights, padding ignored."""
    from asr.model import BiGRU

    torch.manual_seed(0)
    layer = BiGRU(6, 5, dropout=0.0)
    layer.fused = False  # nn.GRU on the padded batch (as on CUDA); the fused path has its own test
    runs = padded_and_packed(layer, torch.randn(4, 9, 6), torch.tensor([9, 4, 1, 7]))
    (ours, ours_grad, ours_grads), (reference, reference_grad, reference_grads) = runs
    assert torch.allclose(ours, reference, atol=1e-6)
    assert (ours[1, 4:] == 0).all() and (ours[2, 1:] == 0).all()  # zero past each length, as packing gives
    assert torch.allclose(ours_grad, reference_grad, atol=1e-6)
    for mine, theirs in zip(ours_grads, reference_grads):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert [name for name, _ in layer.named_parameters()] == [  # the weights are the GRU's, as before
        "norm.weight", "norm.bias", *(f"gru.{w}{s}" for s in ("", "_reverse") for w in BiGRU._WEIGHTS)]


def test_fused_bigru_under_cpu_autocast_keeps_a_float32_recurrence():
    """Under bfloat16 autocast the input projections run in bfloat16, the recurrence in float32
    (its output is float32), and outputs and gradients stay near float32's."""
    from asr.model import BiGRU

    torch.manual_seed(0)
    layer = BiGRU(16, 12, dropout=0.0)
    x, lengths = torch.randn(3, 20, 16), torch.tensor([20, 13, 6])
    runs = []
    for low in (False, True):
        layer.zero_grad()
        inputs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            out = layer(inputs, lengths)
        out.float().pow(2).sum().backward()
        runs.append((out, inputs.grad, [p.grad.clone() for p in layer.parameters()]))
    (ref, ref_grad, ref_grads), (out, grad, grads) = runs
    assert out.dtype == torch.float32 and (out[2, 6:] == 0).all()
    scale = lambda t: t.abs().max()  # noqa: E731
    assert (out - ref).abs().max() < 0.03 * scale(ref)
    assert (grad - ref_grad).abs().max() < 0.05 * scale(ref_grad)
    for mine, theirs in zip(grads, ref_grads):
        assert (mine - theirs).abs().max() < 0.05 * scale(theirs)
    assert not torch.equal(out, ref)  # bfloat16 did run


def test_dropout_on_cpu_drops_at_its_rate_and_scales_the_rest():
    from asr.model import Dropout

    drop = Dropout(0.1)
    x = torch.full((400, 500), 2.0, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 200,000 draws: the standard error is 0.0007
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0) and torch.allclose(x.grad[y != 0], torch.tensor(1 / 0.9))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # PyTorch's generator: seeded runs repeat
    assert not torch.equal(drop(x), y)
    rows = (y == 0).float().mean(dim=1)
    assert rows.std() > 0  # masks differ along every axis (not one draw broadcast)
    assert torch.equal(drop.eval()(x), x)


def test_convolutions_stay_float32_under_cpu_autocast():
    """oneDNN's bfloat16 convolution weight gradient returned NaN now and then on an AMX CPU, so
    under CPU autocast every convolution (the encoder's, and the baselines') runs in float32,
    while the linear layers after them take bfloat16."""
    from asr.model import CNN2d, M5

    torch.manual_seed(0)
    cases = [
        (Encoder(named_config("small", n_mels=20, cnn_channels=4, n_res_blocks=1, rnn_dim=16, n_rnn_layers=1)),
         torch.randn(2, 20, 30)),
        (CNN2d(1, 16, (4, 8), dropout=0.0), torch.randn(2, 16, 30)),
        (CNN2d(2, 32, (4, 8), dropout=0.0), torch.randn(2, 32, 30)),
        (M5((4, 8), dropout=0.0), torch.randn(2, 1, 4000)),
    ]
    for module, feats in cases:
        seen = {}
        hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.update({name: o.dtype}))
                 for name, m in module.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = module(feats, torch.tensor([feats.shape[-1], feats.shape[-1] // 2]))
        for hook in hooks:
            hook.remove()
        assert seen and set(seen.values()) == {torch.float32}, type(module).__name__
        out.float().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    # the linear layers still run in bfloat16
    proj = cases[0][0].proj
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert proj(torch.randn(3, proj.in_features)).dtype == torch.bfloat16


def test_cnn2d_keeps_channels_last_kernels_through_a_state_dict_and_computes_as_contiguous_ones():
    """CNN2d's kernels are channels-last (faster oneDNN convolutions). A state dict of plain
    contiguous tensors loads into them without changing their layout, and the outputs and
    gradients are those of the same network with contiguous kernels."""
    from asr.model import CNN2d

    torch.manual_seed(0)
    net = CNN2d(1, 16, (4, 8), dropout=0.0)
    kernels = [block[0].weight for block in net.blocks]
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    assert not kernels[1].is_contiguous()  # (the first, with one input channel, is both)
    plain = CNN2d(1, 16, (4, 8), dropout=0.0)
    plain.blocks.to(memory_format=torch.contiguous_format)
    plain.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
    assert plain.blocks[1][0].weight.is_contiguous()
    copy = CNN2d(1, 16, (4, 8), dropout=0.0)
    copy.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
    assert all(block[0].weight.is_contiguous(memory_format=torch.channels_last) for block in copy.blocks)
    feats, lengths = torch.randn(3, 16, 40), torch.tensor([40, 25, 9])
    outs = []
    for model in (net, plain):
        out, out_lengths = model(feats, lengths)
        out.square().sum().backward()
        outs.append((out, out_lengths, [block[0].weight.grad for block in model.blocks]))
    (a, la, ga), (b, lb, gb) = outs
    assert torch.equal(la, lb) and torch.allclose(a, b, atol=1e-5)
    assert all((x - y).abs().max() <= 1e-5 * x.abs().max() for x, y in zip(ga, gb))  # float32 sums' order


def test_cnn2d_blocks_of_two_convolutions_keep_the_shapes_and_ignore_the_padding():
    """``convs_per_block = 2`` stacks a second 3x3 convolution (with its batch norm and ReLU) before
    each pooling: the same frames and output size as one, twice the convolutions, and an
    utterance's output does not depend on the padding of its batch."""
    from asr.model import CNN2d, Classifier, ClassifierConfig

    torch.manual_seed(0)
    one, two = CNN2d(1, 16, (4, 8), dropout=0.0), CNN2d(1, 16, (4, 8), dropout=0.0, convs_per_block=2)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) for net in (one, two)]
    assert convs == [2, 4]
    assert [two.blocks[0][i].weight.shape[:2] for i in (0, 3)] == [(4, 1), (4, 4)]
    feats = torch.randn(2, 16, 40)
    lengths = torch.tensor([40, 22])  # even: the last valid frame's pooling pair is whole
    feats[1, :, 22:] = 0.0  # as the feature extractor pads
    two.eval()
    (out_one, len_one), (out_two, len_two) = one.eval()(feats, lengths), two(feats, lengths)
    assert out_one.shape == out_two.shape == (2, 10, 8 * 4) and torch.equal(len_one, len_two)
    alone, _ = two(feats[1:, :, :22], lengths[1:])
    assert torch.allclose(alone[0, : len_two[1]], out_two[1, : len_two[1]], atol=1e-5)
    with pytest.raises(ValueError, match="convs_per_block = 0"):
        ClassifierConfig(kind="cnn2d", n_feats=16, channels=(4, 8), convs_per_block=0)
    with pytest.raises(ValueError, match="only for the 2-D CNNs"):
        ClassifierConfig(kind="m5", n_feats=1, convs_per_block=2)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in Classifier(
        ClassifierConfig(kind="complex_cnn", n_feats=32, channels=(4, 8), convs_per_block=2)).modules()) == 4
