import numpy as np
import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models.custom import StatefulModule
from tbptt.models.influence import InfluenceBalancing, optimal_theta


def _matrix(n: int) -> np.ndarray:
    """A = 1/2 I + 1/2 U written out entry by entry: A[i, i] = A[i, i + 1] = 1/2."""
    A = np.zeros((n, n))
    for i in range(n):
        A[i, i] = 0.5
        if i + 1 < n:
            A[i, i + 1] = 0.5
    return A


def _signs(n: int, p: int) -> np.ndarray:
    return np.array([1.0 if i < p else -1.0 for i in range(n)])


def _naive(theta: float, s0: np.ndarray, T: int, n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (T, B) and final state (B, n) by the matrix recurrence, one stream at a time."""
    A, c = _matrix(n), _signs(n, p)
    outputs = np.zeros((T, s0.shape[0]))
    final = np.zeros_like(s0)
    for b in range(s0.shape[0]):
        s = s0[b].copy()
        for t in range(T):
            s = A @ s + theta * c
            outputs[t, b] = s[0]
        final[b] = s
    return outputs, final


def _model(n=5, p=2, theta=0.3) -> InfluenceBalancing:
    """A float64 model whose theta is exactly ``theta`` (not its float32 rounding)."""
    model = InfluenceBalancing(n=n, p=p).double()
    with torch.no_grad():
        model.theta.fill_(theta)
    return model


def test_forward_equals_the_matrix_recurrence():
    n, p, T, B = 5, 2, 6, 3
    model = _model(n, p, 0.3)
    s0 = torch.rand(B, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outputs, state = model(torch.zeros(T, B, 1, dtype=torch.float64), s0)
    ref_out, ref_state = _naive(0.3, s0.numpy(), T, n, p)
    assert outputs.shape == (T, B, 1) and outputs.dtype == torch.float64
    np.testing.assert_allclose(outputs[..., 0].detach().numpy(), ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.detach().numpy(), ref_state, rtol=0, atol=1e-12)
    # No state: s_0 = ones.
    outputs, _ = model(torch.zeros(T, B, 1, dtype=torch.float64))
    ref_out, _ = _naive(0.3, np.ones((B, n)), T, n, p)
    np.testing.assert_allclose(outputs[..., 0].detach().numpy(), ref_out, rtol=0, atol=1e-12)


def test_stationary_output_and_the_optimal_theta():
    n, p = 23, 10
    A, c = _matrix(n), _signs(n, p)
    response = np.linalg.solve(np.eye(n) - A, c)[0]  # stationary s[1] per unit of theta
    assert response == pytest.approx(2 * (2 * p - n), abs=1e-9)  # -6
    assert optimal_theta(n, p) == pytest.approx(1 / response, abs=1e-12)
    assert optimal_theta() == pytest.approx(-1 / 6, abs=1e-15)
    # The model, run long enough to forget s_0, settles at response * theta; at theta* it outputs 1.
    for theta in (0.5, -0.25, optimal_theta()):
        model = _model(23, 10, theta)
        outputs, _ = model(torch.zeros(400, 1, 1, dtype=torch.float64))
        assert outputs[-1].item() == pytest.approx(response * theta, abs=1e-9)
    assert outputs[-1].item() == pytest.approx(1.0, abs=1e-9)


def _loss(model, T, B=2):
    outputs, _ = model(torch.zeros(T, B, 1, dtype=torch.float64))
    return 0.5 * ((outputs - 1.0) ** 2).sum()


def test_gradient_matches_finite_differences_and_the_closed_form():
    n, p, T, B, theta = 5, 2, 8, 2, 0.3
    model = _model(n, p, theta)
    loss = _loss(model, T, B)
    (grad,) = torch.autograd.grad(loss, model.theta)

    eps = 1e-6
    with torch.no_grad():
        model.theta.fill_(theta + eps)
        up = _loss(model, T, B).item()
        model.theta.fill_(theta - eps)
        down = _loss(model, T, B).item()
    assert grad.item() == pytest.approx((up - down) / (2 * eps), rel=1e-7)

    # Closed form: s_t = A^t 1 + theta sum_{k<t} A^k c, z_t = d s_t / d theta = sum_{k<t} A^k c.
    A, c = _matrix(n), _signs(n, p)
    expected, power, z = 0.0, np.eye(n), np.zeros(n)
    for _t in range(1, T + 1):
        z = z + power @ c
        power = power @ A  # A^t
        s = power @ np.ones(n) + theta * z
        expected += B * (s[0] - 1.0) * z[0]
    assert grad.item() == pytest.approx(expected, rel=1e-12)


def test_short_term_influence_is_positive_long_term_negative():
    # d o_t / d theta: +1 after one step (unit 1 is a "+" unit), 2 (2p - n) = -6 in the long run.
    model = _model(23, 10, 0.5)
    outputs, _ = model(torch.zeros(400, 1, 1, dtype=torch.float64))
    first = torch.autograd.grad(outputs[0].sum(), model.theta, retain_graph=True)[0].item()
    short = torch.autograd.grad(outputs[5].sum(), model.theta, retain_graph=True)[0].item()
    last = torch.autograd.grad(outputs[-1].sum(), model.theta)[0].item()
    assert first == pytest.approx(1.0, abs=1e-12)
    assert short > 0  # units within 6 steps of unit 1 are all "+" units (p = 10)
    assert last == pytest.approx(-6.0, abs=1e-9)


def test_runs_under_stateful_module_with_gates_and_resets():
    n, p, T, B = 5, 2, 6, 3
    model = _model(n, p, 0.3)
    wrapped = StatefulModule(model, batch_dim=-2)
    x = torch.zeros(T, B, 1, dtype=torch.float64)
    direct, direct_state = model(x)
    assert wrapped.initial_state(B).dtype == torch.float64
    scaled, state = wrapped(x, None, gates=[1.0, 1.0, 0.5, 1.0, 2.0, 1.0])
    torch.testing.assert_close(scaled, direct, rtol=0, atol=1e-12)  # gates change gradients only
    torch.testing.assert_close(state, direct_state, rtol=0, atol=1e-12)
    gated, _ = wrapped(x, None, gates=[1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    # Gate 0 on the edge entering step 2: the gradient of a run detached before step 2.
    (grad,) = torch.autograd.grad(0.5 * ((gated - 1) ** 2).sum(), model.theta)
    head, mid = model(x[:2])
    tail, _ = model(x[2:], mid.detach())
    ref = torch.cat([head, tail])
    (ref_grad,) = torch.autograd.grad(0.5 * ((ref - 1) ** 2).sum(), model.theta)
    assert grad.item() == pytest.approx(ref_grad.item(), rel=1e-12)
    # A reset zeroes that stream's state (StatefulModule's convention) before the row is read.
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[2, 1] = True
    out, _ = wrapped(x, None, resets=resets)
    ref_out, _ = _naive(0.3, np.zeros((1, n)), T - 2, n, p)
    np.testing.assert_allclose(out[2:, 1, 0].detach().numpy(), ref_out[:, 0], atol=1e-12)
    torch.testing.assert_close(out[:, 0], direct[:, 0], rtol=0, atol=1e-12)


def test_invalid_sizes():
    with pytest.raises(ConfigError, match="0 <= p <= n"):
        InfluenceBalancing(n=3, p=4)
    with pytest.raises(ConfigError, match="no optimum"):
        optimal_theta(4, 2)
    with pytest.raises(ConfigError, match=r"Expected a state of shape \(2, 23\)"):
        InfluenceBalancing()(torch.zeros(3, 2, 1), torch.ones(2, 5))
