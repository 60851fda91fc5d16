"""The gradient laboratory's experiments end to end: measure, plot, write JSON + PNG + Markdown.

Each ``*_lab`` function takes a model (fresh, or from
:func:`tbptt.analysis.load_model`) and a
training split (a :class:`~tbptt.data.StreamData`: text tokens, a time series,
a task; a (N,) token tensor is a text's), runs one measurement, writes
``<name>.json``, ``<name>*.png`` and ``<name>.md`` (a short summary that shows
the figures) into ``out``, and returns the JSON payload. ``tbptt analyze
<name>`` is a thin wrapper around them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from tbptt.analysis.estimator import estimator_quality
from tbptt.analysis.jacobian import jacobian_norms
from tbptt.analysis.linear import (
    linear_rnn_from_model,
    linear_rnn_gradients,
    matrix_with_spectral_radius,
)
from tbptt.analysis.plots import plot_bias, plot_jacobian, plot_spectrum
from tbptt.analysis.spectrum import reference_radius, spectrum
from tbptt.analysis.windows import data_windows, measuring_copy, stream_windows, warm_state
from tbptt.data import StreamData
from tbptt.errors import ConfigError, DataError
from tbptt.models import ModelConfig, RecurrentLM, RecurrentNet
from tbptt.train import Objective, sequence_gradient
from tbptt.truncation import FullBPTT

__all__ = [
    "linear_lab",
    "jacobian_lab",
    "spectrum_lab",
    "bias_lab",
]


# -- output ------------------------------------------------------------------------------


def _write(out: Path, name: str, payload: dict, lines: list[str], figures: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = [f"# tbptt analyze {name}", "", *lines, ""]
    md += [f"![{f.stem}]({f.name})" for f in figures]
    md += ["", f"Numbers: [{name}.json]({name}.json)", ""]
    (out / f"{name}.md").write_text("\n".join(md))


def _describe(model: nn.Module) -> str:
    if not isinstance(model, RecurrentNet):
        inner = getattr(model, "module", model)  # a StatefulModule's own module
        return f"{type(inner).__name__} ({sum(p.numel() for p in model.parameters())} parameters)"
    c = model.config
    bound = f", spectral norm <= {c.spectral_norm:g}" if c.spectral_norm else ""
    return f"{c.kind} {c.num_layers}x{c.hidden_size}{bound}"


def _model_info(model: nn.Module) -> dict:
    """The built-in model's configuration, else the module's name and size."""
    if isinstance(model, RecurrentNet):
        return model.config.to_dict()
    if isinstance(getattr(model, "config", None), ModelConfig):  # a forecaster: its core's
        return model.config.to_dict()
    inner = getattr(model, "module", model)
    return {
        "module": type(inner).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _built_in_only(model: nn.Module, name: str) -> RecurrentNet:
    """The built-in recurrent net whose blocks and per-step path jacobian and spectrum read: the
    model itself, or a forecaster's core (its highway's lags are data, never a recurrence)."""
    if isinstance(getattr(model, "core", None), RecurrentNet):
        model = model.core
    if not isinstance(model, RecurrentNet):
        raise ConfigError(
            f"analyze {name} needs the built-in recurrent model (RecurrentNet), got "
            f"{_describe(model)}; analyze bias measures any model"
        )
    return model


def _curve(label: str, log_norms: torch.Tensor, fit: dict, radius: float | None) -> dict:
    """One plotted curve from (B, T + 1) log-norms."""
    return {
        "label": label,
        "log_norms": log_norms.mean(0).tolist(),
        "log_min": log_norms.min(0).values.tolist(),
        "log_max": log_norms.max(0).values.tolist(),
        "fit": fit,
        "radius": radius,
    }


# -- experiments --------------------------------------------------------------------------


def linear_lab(
    tokens: torch.Tensor | None,
    vocab_size: int,
    out: str | Path,
    *,
    hidden_size: int = 16,
    length: int = 50,
    jacobian_length: int = 120,
    streams: int = 4,
    radii: Sequence[float] = (0.9, 1.1),
    seed: int = 0,
) -> dict:
    """Linear RNNs with prescribed spectral radii: closed-form gradients vs the library's, and rates.

    For each rho: a one-layer one-hot linear ``RecurrentLM`` whose W_hh has
    spectral radius rho (:func:`~tbptt.analysis.matrix_with_spectral_radius`);
    (1) the closed-form gradient (matrix powers) against the library's exact
    gradient (``sequence_gradient`` with ``full``) on a window of ``length``
    steps from a random h_0 != 0; (2) ||dh_T/dh_t|| over ``jacobian_length``
    steps and its fitted log-slope against log rho.

    ``tokens``: a (N,) stream of ids below ``vocab_size``, or None for ids drawn
    uniformly from ``seed`` (the closed form holds for any input sequence, so no
    corpus is needed).
    """
    out = Path(out)
    source = "given"
    if tokens is None:
        per_stream = max(length, jacobian_length) + 1  # per stream, as data_windows cuts them
        draw = torch.Generator().manual_seed(seed)
        tokens = torch.randint(vocab_size, (streams * per_stream,), generator=draw)  # (N,)
        source = f"synthetic: uniform over {vocab_size} ids, seed {seed}"
    g = torch.Generator().manual_seed(seed)
    rows, curves, spectra = [], [], []
    for rho in radii:
        torch.manual_seed(seed)
        model = RecurrentLM(
            ModelConfig(
                vocab_size=vocab_size,
                kind="linear",
                hidden_size=hidden_size,
                num_layers=1,
                embedding_size=0,
                dropout=0.0,
            )
        )
        model = measuring_copy(model)
        with torch.no_grad():
            model.recurrent.core.weight_hh_l0.copy_(
                matrix_with_spectral_radius(hidden_size, rho, generator=g)
            )
        _, inputs, targets = data_windows(tokens, length=length, streams=streams)
        h0 = torch.randn(1, streams, hidden_size, generator=g, dtype=torch.float64)
        closed = linear_rnn_gradients(
            linear_rnn_from_model(model), model.embed(inputs), targets, h0[0]
        )
        library = dict(
            zip(
                [n for n, _ in model.named_parameters()],
                sequence_gradient(model, FullBPTT(), inputs, targets, state=h0),
            )
        )
        pairs = [
            ("w_hx", "recurrent.core.weight_ih_l0"),
            ("w_hh", "recurrent.core.weight_hh_l0"),
            ("b_h", "recurrent.core.bias_ih_l0"),
            ("b_h", "recurrent.core.bias_hh_l0"),
            ("w_qh", "head.weight"),
            ("b_q", "head.bias"),
        ]
        diff = max(float((closed[a] - library[b]).abs().max()) for a, b in pairs)
        scale = max(float(library[b].abs().max()) for _, b in pairs)
        _, jac_inputs, _ = data_windows(tokens, length=jacobian_length, streams=streams)
        profile = jacobian_norms(model, jac_inputs)
        fit = profile.fit()
        radius = reference_radius(model)
        rows.append(
            {
                "rho": rho,
                "measured_radius": radius,
                "closed_form_max_abs_diff": diff,
                "gradient_max_abs": scale,
                "fit": fit,
                "log_rho": math.log(rho),
                "slope_relative_error": abs(fit["slope"] / math.log(rho) - 1.0)
                if rho != 1
                else math.nan,
            }
        )
        curves.append(_curve(f"rho = {rho:g}", profile.log_norms, fit, radius))
        spectra.extend({**b, "gate": f"rho={rho:g}"} for b in spectrum(model))
    figures = [
        plot_jacobian(curves, out / "linear.png", title=f"linear RNN, H = {hidden_size}"),
        plot_spectrum(spectra, out / "linear_eigenvalues.png", title="prescribed W_hh"),
    ]
    payload = {
        "hidden_size": hidden_size,
        "length": length,
        "jacobian_length": jacobian_length,
        "streams": streams,
        "seed": seed,
        "vocab_size": vocab_size,
        "tokens": source,
        "radii": rows,
        "curves": curves,
    }
    lines = [
        f"Linear RNN h_t = W_hx x_t + W_hh h_(t-1) + b, H = {hidden_size}, one-hot inputs; "
        f"closed-form gradient on {length} steps x {streams} streams from h_0 != 0, "
        f"Jacobian norms over {jacobian_length} steps; tokens {source}.",
        "",
        "| rho | closed form vs library (max abs diff) | fitted rate | log-slope / log rho - 1 |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['rho']:g} | {r['closed_form_max_abs_diff']:.2e} | {r['fit']['rate']:.5f} | "
        f"{r['slope_relative_error']:.2e} |"
        for r in rows
    ]
    _write(out, "linear", payload, lines, figures)
    return payload


def jacobian_lab(
    model: nn.Module,
    data: StreamData | torch.Tensor,
    out: str | Path,
    *,
    length: int = 100,
    streams: int = 4,
    warmup: int = 50,
    offset: int = 0,
    norm: str = "spectral",
) -> dict:
    """||dh_T/dh_t|| against T - t on real windows, its fitted rate and the spectral-radius reference.

    ``data``: the training split (a (N,) token tensor, or a :class:`~tbptt.data.StreamData`
    of ids or features). The warm-up honours the split's resets; inside the measured
    window they are not applied (past one the product would be exactly 0): the
    Jacobians are those of the state map driven by the window's inputs.

    Raises:
        ConfigError: the model is not a built-in ``RecurrentNet``.
        DataError: the split is too short for the windows.
    """
    model = _built_in_only(model, "jacobian")
    out = Path(out)
    model = measuring_copy(model)
    w = stream_windows(data, length=length, streams=streams, warmup=warmup, offset=offset)
    state = warm_state(model, w.warmup, resets=w.warmup_resets)
    profile = jacobian_norms(model, w.inputs, state=state, norm=norm)
    fit = profile.fit()
    radius = reference_radius(model)
    curve = _curve(_describe(model), profile.log_norms, fit, radius)
    figure = plot_jacobian([curve], out / "jacobian.png", title=f"{_describe(model)}, {norm} norm")
    restarts = int(w.resets.sum()) if w.resets is not None else 0
    payload = {
        "model": model.config.to_dict(),
        "length": length,
        "streams": streams,
        "warmup": warmup,
        "offset": offset,
        "restarts_not_applied": restarts,
        "norm": norm,
        "fit": fit,
        "reference_radius": radius,
        "log_norms": profile.log_norms.tolist(),
    }
    mean = profile.mean_log_norms
    picks = sorted({1, 5, 10, 20, 50, length} & set(range(1, length + 1)))
    lines = [
        f"{_describe(model)}: {norm} norm of dh_T/dh_t (whole state, every layer) on "
        f"{streams} windows of {length} steps after {warmup} warm-up steps.",
        "",
        "| T - t | " + " | ".join(str(k) for k in picks) + " |",
        "| --- |" + " --- |" * len(picks),
        "| norm (geometric mean) | " + " | ".join(f"{math.exp(mean[k]):.3g}" for k in picks) + " |",
        "",
        f"Fitted rate per step: {fit['rate']:.4f} (log-slope {fit['slope']:.4f}, distances "
        f"{fit['start']}..{fit['stop'] - 1}); spectral radius of the reference recurrent block: "
        f"{radius:.4f} (the exact rate only for a linear RNN).",
    ]
    if restarts:
        lines += [
            "",
            f"The window holds {restarts} stream restart(s) (episode or series starts); they are "
            "not applied here: these are the Jacobians of the state map across them.",
        ]
    _write(out, "jacobian", payload, lines, [figure])
    return payload


def spectrum_lab(model: nn.Module, out: str | Path) -> dict:
    """Eigenvalues and singular values of every recurrent block.

    Raises:
        ConfigError: the model is not a built-in ``RecurrentNet``.
    """
    model = _built_in_only(model, "spectrum")
    out = Path(out)
    blocks = spectrum(model)
    figure = plot_spectrum(blocks, out / "spectrum.png", title=_describe(model))
    payload = {"model": model.config.to_dict(), "blocks": blocks}
    lines = [
        f"{_describe(model)}: recurrent blocks W_hh (per layer and gate).",
        "",
        "| layer | block | spectral radius | spectral norm | smallest singular value |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {b['layer']} | {b['gate']} | {b['spectral_radius']:.4f} | {b['spectral_norm']:.4f} | "
        f"{b['singular_values'][-1]:.4f} |"
        for b in blocks
    ]
    _write(out, "spectrum", payload, lines, [figure])
    return payload


def bias_lab(
    model: nn.Module,
    data: StreamData | torch.Tensor,
    out: str | Path,
    *,
    objective: Objective | None = None,
    ks: Sequence[int] = (1, 5, 10, 35, 100),
    families: Sequence[str] = ("regular", "randomized"),
    strategies: Sequence[str] = (),
    length: int = 200,
    streams: int = 4,
    warmup: int = 50,
    offset: int = 0,
    draws: int = 20,
    seed: int = 0,
    on_result: Callable[[dict], None] | None = None,
) -> dict:
    """Cosine, bias, variance, MSE and cost per step of ``<family>:K`` against the exact
    gradient, for each K, and of each spec in ``strategies`` (``rtrl``, ``uoro``, ``snap:1``,
    ``k1k2:10,35``...).

    ``data``: the training split (a (N,) token tensor, or a :class:`~tbptt.data.StreamData`
    whose ``starts`` and ``mask`` become the windows' resets and loss mask);
    ``objective``: the data's loss (None: next-token cross-entropy). Any model
    :func:`tbptt.train.sequence_gradient` runs will do.

    Raises:
        DataError: the split is too short for the windows, or no row's loss counts in them.
    """
    out = Path(out)
    model = measuring_copy(model)
    w = stream_windows(data, length=length, streams=streams, warmup=warmup, offset=offset)
    rows = w.inputs.shape[0] * w.inputs.shape[1]
    counted = int(w.mask.sum()) if w.mask is not None else rows
    if counted == 0:
        raise DataError(
            f"no row's loss counts in the {streams} windows of {length} steps (the data's loss "
            "mask); use longer windows or another offset"
        )
    restarts = int(w.resets.sum()) if w.resets is not None else 0
    specs = [f"{family}:{k}" for k in ks for family in families] + list(strategies)
    result = estimator_quality(
        model,
        w.inputs,
        w.targets,
        specs,
        draws=draws,
        generator=torch.Generator().manual_seed(seed),
        state=warm_state(model, w.warmup, resets=w.warmup_resets),
        resets=w.resets,
        mask=w.mask,
        objective=objective,
        on_result=on_result,
    )
    objective_name = objective.name if objective is not None else "lm"
    payload = {
        "model": _model_info(model),
        "objective": objective_name,
        "counted_rows": counted,
        "restarts": restarts,
        "length": length,
        "streams": streams,
        "warmup": warmup,
        "offset": offset,
        "draws": draws,
        "seed": seed,
        **result,
    }
    figure = plot_bias(
        result["results"], out / "bias.png", title=f"{_describe(model)}, T = {length}"
    )
    lines = [
        f"{_describe(model)}: each strategy's gradient of the mean loss over {streams} windows "
        f"of {length} steps (after {warmup} warm-up steps) against the exact one (every gate 1; "
        f"norm {result['exact_norm']:.4g}); random strategies over {draws} draws.",
        "",
        "| strategy | cosine (mean) | relative bias | noise floor | relative variance | "
        "relative MSE | cosine of one draw | ms per step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['spec']} | {r['cosine']:.6f} | {r['relative_bias']:.3e} | {r['noise_floor']:.1e} | "
        f"{r['relative_variance']:.2e} | {r['relative_mse']:.2e} | {r['cosine_per_draw']:.6f} | "
        f"{1e3 * r['seconds_per_step']:.3g} |"
        for r in result["results"]
    ]
    if objective_name != "lm" or restarts or counted != rows:
        lines[1:1] = [
            "",
            f"Objective {objective_name}; {counted} of {rows} rows count in the loss (the data's "
            f"mask); {restarts} stream restart(s) in the windows, where the state starts afresh "
            "and no gradient crosses.",
        ]
    lines += [
        "",
        "An unbiased estimator's relative bias is Monte-Carlo noise of about the noise floor; "
        "a biased one stays above it however many draws are taken.",
    ]
    _write(out, "bias", payload, lines, [figure])
    return payload
