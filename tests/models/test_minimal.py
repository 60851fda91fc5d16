"""minGRU, minLSTM and the LRU: their paths against each other and against autograd on the
recorded loop (float64), zoneout inside the scan, the configuration's refusals, the CLI.

The strategies' gradients against an independent step-by-step reference written from the
documented math are in tests/train/test_float_gradients.py (parametrized over these kinds).
"""

import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models import ModelConfig, RecurrentNet
from tbptt.models.minimal import LINEAR_KINDS, LinearRecurrent


def _stack(kind, seed=0, **options):
    torch.manual_seed(seed)
    return LinearRecurrent(kind, input_size=3, hidden_size=4, num_layers=2, **options).double()


def _run(rec, path, x, state, gates, resets):
    out, st = rec(x, state, gates, resets=resets, path=path)
    objective = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + st.pow(2).sum()
    return out, st, torch.autograd.grad(objective, [x, state, *rec.parameters()])


@pytest.mark.parametrize("steps", [7, 70])
@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_every_path_gives_the_values_and_gradients_of_the_recorded_loop(kind, steps):
    rec = _stack(kind)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps, 3, 3, generator=g, dtype=torch.double, requires_grad=True)
    state = torch.randn(2, 3, rec.state_size, generator=g, dtype=torch.double)
    state.requires_grad_(True)
    gates = [0.5] + [1.0] * (steps - 1)
    gates[2], gates[4], gates[5] = 2.0, 0.0, 1.25
    resets = torch.zeros(steps, 3, dtype=torch.bool)
    resets[2, 0] = resets[5, 2] = resets[steps - 1, 1] = True
    want = _run(rec, "autograd", x, state, gates, resets)
    for path in ("sequential", "parallel", "auto", "steps", "fused"):
        out, st, grads = _run(rec, path, x, state, gates, resets)
        torch.testing.assert_close(out, want[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(st, want[1], rtol=0, atol=1e-12)
        for a, b in zip(grads, want[2]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_paths_agree_in_float32(kind):
    torch.manual_seed(0)
    rec = LinearRecurrent(kind, input_size=3, hidden_size=8)
    x = torch.randn(200, 2, 3, requires_grad=True)
    results = []
    for path in ("sequential", "parallel"):
        gates = [1.0] * 100 + [0.0] + [1.0, 2.0, 1.0, 1.0, 1.0] * 19 + [1.0] * 4
        out, st = rec(x, None, gates, path=path)
        results.append((out, *torch.autograd.grad(out.sum() + st.sum(), [x, *rec.parameters()])))
    for a, b in zip(*results):  # 1e-5 of the tensor's scale
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_minlstm_normalizes_its_gates_and_the_lru_is_stable_by_construction():
    rec = _stack("minlstm")
    x = torch.randn(5, 3, 3, dtype=torch.double) * 10
    a, b = rec.coefficients(x)
    proj = rec.layers[0](x)
    f, i = torch.sigmoid(proj[..., :4]), torch.sigmoid(proj[..., 4:8])
    torch.testing.assert_close(a, f / (f + i), rtol=0, atol=1e-12)
    torch.testing.assert_close(b, i / (f + i) * proj[..., 8:], rtol=0, atol=1e-12)
    lru = _stack("lru")
    with torch.no_grad():
        for p in lru.layers:
            p.nu_log.uniform_(-20, 5)  # any parameter values
        lam, _ = lru.coefficients(x)
    assert 0 < lam.abs().max() <= 1.0


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_zoneout_inside_the_scan_is_the_mix_of_old_and_new_state(kind):
    rec = _stack(kind, zoneout=1.0).train()  # every unit keeps its old value
    x = torch.randn(6, 3, 3, dtype=torch.double)
    state = torch.randn(2, 3, rec.state_size, dtype=torch.double)
    _, st = rec(x, state)
    torch.testing.assert_close(st, state, rtol=0, atol=0)
    plain, zoned = _stack(kind), _stack(kind, zoneout=0.3).eval()  # the expectation
    h_new = plain(x[:1], state)[1][0]  # the first layer (the second sees zoned inputs)
    torch.testing.assert_close(zoned(x[:1], state)[1][0], 0.3 * state[0] + 0.7 * h_new)


def test_the_configuration_refuses_what_has_no_meaning_here():
    base = dict(vocab_size=7, kind="mingru", hidden_size=4, embedding_size=3)
    with pytest.raises(ConfigError, match="spectral_norm"):
        ModelConfig(**base, spectral_norm=1.0).check()
    with pytest.raises(ConfigError, match="zoneout_cell"):
        ModelConfig(**base, zoneout_cell=0.1).check()
    with pytest.raises(ConfigError, match="mingru"):
        ModelConfig(**{**base, "kind": "mingrux"}).check()
    model = RecurrentNet(ModelConfig(**base, zoneout=0.2))
    assert model.recurrent.zoneout == 0.2


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_tbptt_train_runs_every_kind(kind, time_machine, tmp_path):
    from tbptt.cli import main

    small = tmp_path / "slice.txt"
    small.write_text(time_machine.read_text(encoding="utf-8")[:2000], encoding="utf-8")
    argv = ["train", "--data", str(small), "--out", str(tmp_path / "run"), "--model", kind]
    argv += ["--strategy", "randomized:8", "--hidden-size", "8", "--num-layers", "2"]
    argv += ["--batch-size", "4", "--epochs", "1", "--threads", "1", "--no-progress"]
    argv += ["--sample-length", "5", "--zoneout", "0.1"]
    assert main(argv) == 0
