"""The gated linear-recurrence primitive against autograd on a naive loop (float64, complex128)
and its two paths against each other."""

import pytest
import torch

from tbptt.models.scan import linear_scan, naive_scan, scan

T, B, N = 9, 3, 4

# every strategy's gates: full (all 1), a cut (0), randomized edges 1/(1-c), a scaled start
CASES = {
    "full": ([1.0] * T, {}),
    "cut inside": ([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], {}),
    "randomized": ([1.0, 1.5, 1.0, 0.0, 1.0, 1.0 / (1 - 0.6), 1.0, 0.0, 4.0], {}),
    "scaled start": ([0.5, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], {}),
    "cut start": ([0.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], {}),
    "resets": ([1.0, 2.0, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0], {0: [1, 0, 1], 4: [0, 1, 1]}),
}


def _args(dtype, seed=0, steps=T):
    g = torch.Generator().manual_seed(seed)
    real = torch.double if dtype in (torch.double, torch.cdouble) else torch.float

    def r(*shape):
        x = torch.randn(*shape, generator=g, dtype=real)
        if dtype.is_complex:
            x = torch.complex(x, torch.randn(*shape, generator=g, dtype=real))
        return x

    a = r(steps, B, N)
    a = (a / a.abs() * torch.rand(steps, B, N, generator=g, dtype=real)).requires_grad_(True)
    return a, r(steps, B, N).requires_grad_(True), r(B, N).requires_grad_(True)


def _reference(a, b, h0, scales, keeps):
    """Autograd on an unrolled loop: a cut is detach(), a scale a hook, a reset a product."""
    h, outs = h0, []
    for t in range(b.shape[0]):
        s = scales[t]
        if s == 0.0:
            h = h.detach()
        elif s != 1.0:
            h = h * 1.0
            h.register_hook(lambda gr, s=s: gr * s)
        if t in keeps:
            h = h * keeps[t]
        h = a[t] * h + b[t]
        outs.append(h)
    return torch.stack(outs), h


def _objective(out, h, seed=1):
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.double).to(out.dtype)
    w_h = torch.randn(h.shape, generator=g, dtype=torch.double).to(h.dtype)
    return ((out * w_out).sum() + (h * w_h).sum()).real + (h.abs() ** 2).sum()


@pytest.mark.parametrize("dtype", [torch.double, torch.cdouble])
@pytest.mark.parametrize("path", ["sequential", "parallel", "autograd"])
@pytest.mark.parametrize("case", CASES)
def test_gated_scan_matches_autograd_on_the_naive_loop(case, path, dtype):
    scales, rows = CASES[case]
    keeps = {t: torch.tensor(k, dtype=torch.double).unsqueeze(-1) for t, k in rows.items()}
    a, b, h0 = _args(dtype)
    out, h = linear_scan(a, b, h0, scales, keeps, path=path)
    ref_out, ref_h = _reference(a, b, h0, scales, keeps)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-12)
    got = torch.autograd.grad(_objective(out, h), (a, b, h0), allow_unused=True)
    want = torch.autograd.grad(_objective(ref_out, ref_h), (a, b, h0), allow_unused=True)
    for x, y, leaf in zip(got, want, (a, b, h0)):
        x = torch.zeros_like(leaf) if x is None else x
        y = torch.zeros_like(leaf) if y is None else y
        torch.testing.assert_close(x, y, rtol=0, atol=1e-10)
    if case != "full":  # the gates change the gradient: the comparison could fail
        plain = _reference(a, b, h0, [1.0] * T, keeps)
        free = torch.autograd.grad(_objective(*plain), (a,))[0]
        assert (free - want[0]).abs().max() > 1e-6


def test_gated_scan_passes_finite_difference_gradcheck():
    a, b, h0 = _args(torch.double, seed=3, steps=5)
    keeps = {2: torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.double)}
    for path in ("sequential", "parallel"):

        def fn(a, b, h0, path=path):
            return linear_scan(a, b, h0, None, keeps, path=path)

        assert torch.autograd.gradcheck(fn, (a, b, h0), atol=1e-7)


@pytest.mark.parametrize("steps", [1, 2, 5, 16, 17, 100, 1000])
@pytest.mark.parametrize("reverse", [False, True])
def test_sequential_and_parallel_paths_agree(steps, reverse):
    for dtype, tol in ((torch.double, 1e-10), (torch.float, 1e-5), (torch.cdouble, 1e-10)):
        a, b, h0 = (x.detach() for x in _args(dtype, seed=steps, steps=steps))
        seq = scan(a, b, h0, parallel=False, reverse=reverse)
        for block in (None, 2, 3):
            par = scan(a, b, h0, parallel=True, reverse=reverse, block=block)
            torch.testing.assert_close(par, seq, rtol=0, atol=tol)


def test_paths_agree_on_gradients_in_float32_over_a_long_window():
    a, b, h0 = _args(torch.float, seed=7, steps=300)
    scales = [1.0] * 300
    scales[100], scales[200] = 0.0, 2.5
    keeps = {150: torch.tensor([[0.0], [1.0], [1.0]])}
    results = []
    for path in ("sequential", "parallel"):
        out, h = linear_scan(a, b, h0, scales, keeps, path=path)
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + h.sum()
        results.append((out, *torch.autograd.grad(loss, (a, b, h0))))
    for x, y in zip(*results):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def test_zero_gate_at_the_start_detaches_the_incoming_state():
    a, b, h0 = _args(torch.double)
    out, _ = linear_scan(a, b, h0, [0.0] + [1.0] * (T - 1))
    assert torch.autograd.grad(out.sum(), h0, allow_unused=True)[0] is None


def test_naive_scan_is_twice_differentiable():
    a, b, h0 = _args(torch.double, steps=4)
    out, _ = naive_scan(a, b, h0, [1.0, 0.5, 1.0, 1.0])
    (g,) = torch.autograd.grad(out.pow(2).sum(), a, create_graph=True)
    assert g.sum().requires_grad


def test_bad_shapes_and_gates_are_refused():
    a, b, h0 = _args(torch.double)
    with pytest.raises(ValueError, match="Expected a, b of one shape"):
        linear_scan(a[:, :2], b, h0)
    with pytest.raises(ValueError, match="gates"):
        linear_scan(a, b, h0, [1.0])
    with pytest.raises(ValueError, match="path"):
        linear_scan(a, b, h0, path="fast")


def test_auto_path_follows_the_measured_thresholds():
    from tbptt.models.scan import PARALLEL_MAX_WIDTH, PARALLEL_MIN_STEPS, choose_path

    steps, width = PARALLEL_MIN_STEPS["cpu"], PARALLEL_MAX_WIDTH["cpu"]
    assert choose_path(steps, width, "cpu") == "parallel"
    assert choose_path(steps - 1, width, "cpu") == "sequential"
    assert choose_path(steps, width + 1, "cpu") == "sequential"  # B = 32, H >= 256: sequential
    assert choose_path(1000, 32 * 256, "cpu") == "sequential"
    assert choose_path(PARALLEL_MIN_STEPS["cuda"], 32 * 512, "cuda") == "parallel"
