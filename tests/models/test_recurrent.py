import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models import KINDS, ModelConfig, Recurrent, RecurrentLM, ScaleGrad, apply_gate, segments
from tests.reference import reference_loss, tiny_batch, tiny_lm

FUSED = [k for k in KINDS if k != "linear"]


def _grads(loss, params):
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("kind", FUSED)
@pytest.mark.parametrize("layers", [1, 2])
def test_fused_and_step_paths_agree(kind, layers):
    torch.manual_seed(0)
    rec = Recurrent(kind, input_size=3, hidden_size=4, num_layers=layers).double()
    x = torch.randn(6, 3, 3, dtype=torch.double)
    state = rec.initial_state(3)
    state = tuple(torch.randn_like(s) for s in state) if kind == "lstm" else torch.randn_like(state)
    params = list(rec.parameters())
    out_f, st_f = rec(x, state, path="fused")
    out_s, st_s = rec(x, state, path="steps")
    torch.testing.assert_close(out_s, out_f, rtol=0, atol=1e-10)
    flat = lambda s: torch.cat([t.flatten() for t in (s if isinstance(s, tuple) else (s,))])  # noqa: E731
    torch.testing.assert_close(flat(st_s), flat(st_f), rtol=0, atol=1e-10)
    w = torch.randn_like(out_f)
    g_f = _grads((out_f * w).sum() + flat(st_f).sum(), params)
    g_s = _grads((out_s * w).sum() + flat(st_s).sum(), params)
    for a, b in zip(g_s, g_f):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
def test_gated_forward_matches_naive_reference(kind, layers):
    """Outputs and gradients with cuts and scaled edges equal a naive ATen-cell loop with hooks."""
    model = tiny_lm(kind, layers=layers)
    inputs, targets = tiny_batch()
    gates = [1.0, 1.5, 0.0, 1.0, 2.0, 1.0]
    params = list(model.parameters())
    for path in ["steps", "fused"] if kind != "linear" else ["steps"]:
        logits, _ = model(inputs, None, gates, path=path)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        ref = reference_loss(model, inputs, targets, cuts={2}, scales={1: 1.5, 4: 2.0})
        torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
        for a, b in zip(_grads(loss, params), _grads(ref, params)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(5, dtype=torch.double, requires_grad=True)
    y = ScaleGrad.apply(x, 0.25)
    assert torch.equal(y, x)
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, 0.75))


def test_zero_gate_is_a_real_detach_and_one_gate_is_untouched():
    x = torch.randn(3, requires_grad=True) * 2
    h, c = apply_gate((x, x + 1), 0.0)
    assert h.grad_fn is None and c.grad_fn is None and not h.requires_grad
    assert apply_gate(x, 1.0) is x
    d = apply_gate({"a": x, "b": [x]}, 0.5)
    assert d["a"].grad_fn is not None and isinstance(d["b"], list)


def test_segments():
    assert segments(None, 5) == [(0, 5, 1.0)]
    assert segments([1.0, 1.0, 0.0, 2.0, 1.0], 5) == [(0, 2, 1.0), (2, 3, 0.0), (3, 5, 2.0)]
    with pytest.raises(ValueError):
        segments([1.0], 3)


def test_linear_rnn_is_the_lectures_linear_recurrence():
    torch.manual_seed(0)
    rec = Recurrent("linear", input_size=2, hidden_size=3).double()
    x = torch.randn(4, 1, 2, dtype=torch.double)
    out, _ = rec(x)
    c = rec.core
    h = torch.zeros(1, 3, dtype=torch.double)
    for t in range(4):
        h = x[t] @ c.weight_ih_l0.T + c.bias_ih_l0 + h @ c.weight_hh_l0.T + c.bias_hh_l0
        torch.testing.assert_close(out[t], h, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError):
        rec(x, path="fused")


def test_one_hot_input_and_bad_configs():
    m = RecurrentLM(
        ModelConfig(vocab_size=5, kind="gru", hidden_size=4, num_layers=1, embedding_size=0)
    )
    logits, state = m(torch.tensor([[1, 2], [3, 4]]))
    assert logits.shape == (2, 2, 5) and state.shape == (1, 2, 4)
    with pytest.raises(ConfigError, match="unknown model"):
        RecurrentLM(ModelConfig(vocab_size=5, kind="transformer"))
    with pytest.raises(ConfigError, match="hidden size"):
        Recurrent("gru", input_size=2, hidden_size=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["fused", "steps"])
def test_per_stream_resets_block_gradient_and_restart_state(kind, path):
    if kind == "linear" and path == "fused":
        pytest.skip("no fused kernel")
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=8, B=3)
    resets = torch.zeros(8, 3, dtype=torch.bool)
    resets[3, 1] = True  # stream 1 starts a new document at step 3
    emb = model.embed(inputs).detach().requires_grad_(True)
    out, _ = model.recurrent(emb, None, None, resets=resets, path=path)
    (g,) = torch.autograd.grad(out[5, 1].sum(), emb)
    assert torch.count_nonzero(g[:3, 1]) == 0  # nothing before the boundary
    assert torch.count_nonzero(g[3:6, 1]) > 0
    # stream 1 after the reset equals a fresh run over its suffix
    fresh, _ = model.recurrent(emb[3:, 1:2], None, path="steps")
    torch.testing.assert_close(out[3:, 1:2], fresh, rtol=0, atol=1e-12)
    # other streams are untouched
    plain, _ = model.recurrent(emb, None, None, path=path)
    torch.testing.assert_close(out[:, [0, 2]], plain[:, [0, 2]], rtol=0, atol=1e-12)
