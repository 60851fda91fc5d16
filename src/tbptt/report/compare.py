"""The written report of a comparison: Markdown with PNGs beside it, and one self-contained HTML.

``write_report(comparison, out)`` writes into ``out``::

    report.md          the report; figures referenced as the PNG files below
    report.html        the same report, figures embedded (data URIs): one file to send
    cuts.png           how each strategy cuts the opening of the text into windows
                       (text data only: other data has no opening to show; a
                       ``windows:K`` entry draws its windows at random, so it has none)
    validation.png     validation perplexity (or the objective's primary metric) vs
                       epochs and vs training seconds
    gap.png            validation - training loss per epoch
    grad_norms.png     gradient-norm distribution per strategy
    summary.json       the table's numbers per run and per strategy, and the verdicts

Every number comes from the runs' metrics records (:mod:`tbptt.report.summary`);
every verdict is computed from those numbers. A run is judged by its objective's
primary metric (perplexity for a language model, else e.g. rmse, acc or loss), and
the data's baselines (trivial predictors) are listed under the table.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from tbptt.report.claims import verdicts
from tbptt.report.figures import plot_cuts, plot_gap, plot_grad_norms, plot_validation
from tbptt.report.summary import (
    Stat,
    columns,
    metric_of,
    run_summary,
    strategy_rows,
)

__all__ = ["ReportPaths", "write_report", "table_rows", "baseline_line"]


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    summary: Path
    figures: dict[str, Path]


FIGURES = (
    ("cuts", "How the strategies cut the text"),
    ("validation", "Validation perplexity"),
    ("gap", "Generalization gap: validation − training loss (the regularization claim)"),
    ("grad_norms", "Gradient norms (the stability claim)"),
)


def _continued(comparison) -> str:
    """What the samples continue, as the runner chose it: the prefix, or the opening of the
    validation text (each sample starts with it)."""
    prefix = comparison.config.prefix
    what = repr(prefix) if prefix else "the first 10 tokens of the validation text"
    return (
        f"{what}, shown at the start of each sample (temperature {comparison.config.temperature:g})"
    )


def _is_text(comparison) -> bool:
    return (comparison.data or {}).get("kind", "text") == "text"


def _columns(comparison):
    return columns(metric_of(comparison).name, _is_text(comparison))


def _ordered(comparison) -> list[str]:
    """The entries whose windows follow the stream in order: the ones the cuts picture shows."""
    return [s for s in comparison.strategies if comparison.entry(s).stateful]


def _figures(comparison) -> tuple[tuple[str, str], ...]:
    # (key, title) of the figures; no picture of the cuts without an opening to cut, or
    # without an entry that cuts the stream in order.
    m = metric_of(comparison)
    shown = [
        ("cuts", "How the strategies cut the text"),
        ("validation", f"Validation {m.label}"),
        ("gap", "Generalization gap: validation − training loss (the regularization claim)"),
        ("grad_norms", "Gradient norms (the stability claim)"),
    ]
    return tuple(shown if comparison.opening and _ordered(comparison) else shown[1:])


def table_rows(comparison) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the results table (mean ± spread over seeds).

    Columns follow the objective: ``val ppl``/``train ppl`` for a language model,
    else ``val <metric>``, ``val loss``, ``train loss`` (see :func:`summary.columns`).
    """
    cols = _columns(comparison)
    header = ["strategy", *[title for _, title, _ in cols]]
    rows = []
    for row in strategy_rows(comparison):
        cells = [row["strategy"]]
        for key, _, fmt in cols:
            cells.append(row[key].format(fmt) if key in row else "n/a")
        rows.append(cells)
    return header, rows


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Stat):
        return {"mean": _json_safe(value.mean), "std": _json_safe(value.std), "n": value.n}
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def baseline_line(comparison) -> str:
    """``Baselines: unigram ppl 16.73`` / ``persistence: rmse 2.582, mae 2.025; mean: ...``
    ('' when the data has none)."""
    baselines = (comparison.data or {}).get("baselines") or {}
    parts = []
    for name, values in baselines.items():
        numbers = ", ".join(f"{k} {_number(v)}" for k, v in values.items())
        parts.append(f"{name} {numbers}" if len(values) == 1 else f"{name}: {numbers}")
    return f"Baselines: {'; '.join(parts)}" if parts else ""


def _number(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return (
        f"{value:.2f}"
        if abs(value) >= 10
        else f"{value:.3f}"
        if abs(value) >= 1
        else f"{value:.4g}"
    )


def _data_line(d: dict) -> str:
    kind = d.get("kind", "text")
    if kind == "text" or "train_tokens" in d:
        return (
            f"Data: {d['train_tokens']:,} training / {d['valid_tokens']:,} validation "
            f"{d.get('level', '')} tokens, vocabulary {d['vocab_size']}."
        )
    rows = ""
    if "train_rows" in d:
        rows = f"{d['train_rows']:,} training / {d.get('valid_rows', 0):,} validation rows"
        if d.get("scored_rows") is not None and d["scored_rows"] != d.get("valid_rows"):
            rows += f" ({d['scored_rows']:,} scored)"
    if kind == "task":
        params = ", ".join(f"{k} {v}" for k, v in (d.get("params") or {}).items())
        what = f"task {d.get('task', '?')}" + (f" ({params})" if params else "")
    elif kind == "series":
        what = f"series, targets {', '.join(map(str, d.get('targets', [])))}"
        if d.get("horizon") is not None:
            what += f", horizon {d['horizon']}"
    else:
        what = str(kind)
    return f"Data: {what}" + (f"; {rows}." if rows else ".")


def _model_line(m) -> str:
    if m is None:
        return "Model: custom model; the same initial weights for every strategy of a seed."
    highway = (
        f", beside an AR({m.highway}) highway (ForecastNet)" if getattr(m, "highway", 0) > 0 else ""
    )
    embedding = m.embedding_size or ("one-hot" if m.vocab_size else "none (features as they are)")
    return (
        f"Model: {m.kind}, {m.num_layers} × {m.hidden_size}, embedding {embedding}, "
        f"dropout {m.dropout:g}{highway}; the same initial weights for every strategy of a seed."
    )


def _sampling(comparison) -> str:
    """How the entries' windows were drawn, in words."""
    t = comparison.train
    windows = [s for s in comparison.strategies if not comparison.entry(s).stateful]
    if t.sampling == "random" or not windows:
        return f"{t.sampling} sampling"
    return (
        f"{t.sampling} sampling (the state carried from window to window), "
        f"{', '.join(windows)}: windows at random offsets, each from a fresh state"
    )


def _setup_lines(comparison) -> list[str]:
    c, m, t, d = comparison.config, comparison.model, comparison.train, comparison.data
    budget = [
        f"{c.budget_epochs} epochs" if c.budget_epochs else None,
        f"{c.budget_seconds:g} training seconds" if c.budget_seconds else None,
        f"{c.budget_tokens:,} tokens" if c.budget_tokens else None,
    ]
    objective = metric_of(comparison)
    lines = [
        _data_line(d),
        _model_line(m),
        f"Training: {t.optimizer} lr {t.lr:g}, batch {t.batch_size} streams, clip {t.clip:g}, "
        f"{_sampling(comparison)}, non-finite steps: {t.nonfinite}.",
        f"Budget per run: {' or '.join(b for b in budget if b)}"
        f"{' (whichever comes first)' if sum(map(bool, budget)) > 1 else ''}; "
        f"seeds {', '.join(str(s) for s in c.seeds)}.",
    ]
    if not objective.lm:
        better = "higher" if objective.higher_is_better else "lower"
        lines.append(
            f"Objective: {objective.objective}; strategies compared by validation "
            f"{objective.name} ({better} is better)."
        )
    return lines


NOTES = (
    "Perplexities are token-weighted (exp of the mean loss per token); training perplexity is "
    "measured over each epoch's windows while training, validation perplexity after the epoch "
    "with the state carried across the whole validation text. Seconds are training seconds "
    "(evaluation excluded); an epoch stopped by the budget counts as the fraction of the text it "
    "covered. Peak memory is the highest resident memory sampled during the run minus the level "
    "just before it (all runs share one process); on a CUDA device, the allocator's peak during "
    "the run. With several seeds a cell reads mean ± sample standard deviation."
)


OTHER_NOTES = (
    "Training loss is the mean over each epoch's windows while training; validation metrics "
    "are measured after the epoch with the state carried across the whole validation split. "
    "Seconds are training seconds (evaluation excluded); an epoch stopped by the budget counts "
    "as the fraction of the data it covered. Peak memory is the highest resident memory sampled "
    "during the run minus the level just before it (all runs share one process); on a CUDA "
    "device, the allocator's peak during the run. With several seeds a cell reads mean ± "
    "sample standard deviation."
)


def _notes(comparison) -> str:
    return NOTES if metric_of(comparison).lm else OTHER_NOTES


def write_report(comparison, out: str | Path) -> ReportPaths:
    """Figures, ``report.md``, ``report.html`` and ``summary.json`` for ``comparison`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = comparison.config.seeds[0]
    figures = {}
    if _figures(comparison)[0][0] == "cuts":  # text data: the picture of the cuts
        figures["cuts"] = plot_cuts(
            _ordered(comparison),
            comparison.opening,
            comparison.separator,
            comparison.stream_steps,
            seed,
            out / "cuts.png",
        )
    figures |= {
        "validation": plot_validation(comparison, out / "validation.png"),
        "gap": plot_gap(comparison, out / "gap.png"),
        "grad_norms": plot_grad_norms(comparison, out / "grad_norms.png"),
    }
    header, rows = table_rows(comparison)
    metric = metric_of(comparison)
    found = verdicts(comparison)
    samples = [(r.strategy, r.seed, r.sample) for r in comparison.runs]
    runs = [(r.strategy, r.seed, r.directory) for r in comparison.runs]

    summary = {
        "setup": _setup_lines(comparison),
        "objective": dict(getattr(comparison, "objective", None) or {}),
        "baselines": _json_safe((comparison.data or {}).get("baselines") or {}),
        "strategies": [_json_safe(r) for r in strategy_rows(comparison)],
        "runs": [
            {
                "strategy": r.strategy,
                "seed": r.seed,
                **_json_safe(run_summary(r.records, metric.name, metric.higher_is_better)),
            }
            for r in comparison.runs
        ],
        "verdicts": [asdict(v) for v in found],
    }
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")

    md = out / "report.md"
    md.write_text(_markdown(comparison, header, rows, found, samples, runs))
    page = out / "report.html"
    page.write_text(_html(comparison, header, rows, found, samples, runs, figures))
    return ReportPaths(markdown=md, html=page, summary=summary_path, figures=figures)


def _markdown(comparison, header, rows, found, samples, runs) -> str:
    lines = ["# Truncation strategies compared", ""]
    lines += [f"- {line}" for line in _setup_lines(comparison)] + [""]
    figures = _figures(comparison)
    if figures[0][0] == "cuts":
        lines += ["## How each strategy cuts the text", "", "![cuts](cuts.png)", ""]
    lines += ["## Results", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    if baselines := baseline_line(comparison):
        lines += [baselines + ".", ""]
    for spec, reason in getattr(comparison, "skipped", {}).items():
        lines += [f"Not run: **{spec}** — {reason}.", ""]
    lines += [_notes(comparison), ""]
    lines += ["## Verdicts", ""]
    for v in found:
        lines += [f"- **{v.claim}** — *{v.outcome}.* {v.text}", ""]
    for key, title in figures:
        if key != "cuts":
            lines += [f"## {title}", "", f"![{key}]({key}.png)", ""]
    if any(sample for _, _, sample in samples):
        lines += ["## Samples", ""]
        lines += [f"Each trained model continues {_continued(comparison)}.", ""]
        for strategy, seed, sample in samples:
            lines += [f"- `{strategy}` (seed {seed}):", "", "  ```", f"  {sample}", "  ```", ""]
    lines += ["## Files", ""]
    for strategy, seed, directory in runs:
        if directory:
            lines.append(
                f"- `{strategy}` seed {seed}: [{directory}/metrics.jsonl]({directory}/metrics.jsonl)"
            )
    lines += ["- [summary.json](summary.json): the table's numbers per run and per strategy", ""]
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; }
.outcome { font-style: italic; }
"""


def _html(comparison, header, rows, found, samples, runs, figures) -> str:
    e = html.escape

    def image(key: str, title: str) -> str:
        data = base64.b64encode(figures[key].read_bytes()).decode("ascii")
        return f'<figure><img src="data:image/png;base64,{data}" alt="{e(title)}"></figure>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<title>Truncation strategies compared</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<h1>Truncation strategies compared</h1>",
        "<ul>",
        *[f"<li>{e(line)}</li>" for line in _setup_lines(comparison)],
        "</ul>",
    ]
    figure_list = _figures(comparison)
    if figure_list[0][0] == "cuts":
        parts += [f"<h2>{e(figure_list[0][1])}</h2>", image(*figure_list[0])]
    parts += [
        "<h2>Results</h2>",
        "<table>",
        "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for row in rows:
        cells = [f"<td>{e(row[0])}</td>"] + [f'<td class="num">{e(c)}</td>' for c in row[1:]]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts += ["</tbody>", "</table>"]
    if baselines := baseline_line(comparison):
        parts.append(f"<p>{e(baselines)}.</p>")
    for spec, reason in getattr(comparison, "skipped", {}).items():
        parts.append(f"<p>Not run: <b>{e(spec)}</b> — {e(reason)}.</p>")
    parts += [f"<p>{e(_notes(comparison))}</p>", "<h2>Verdicts</h2>", "<ul>"]
    for v in found:
        parts.append(
            f'<li><strong>{e(v.claim)}</strong> <span class="outcome">{e(v.outcome)}.</span> '
            f"{e(v.text)}</li>"
        )
    parts.append("</ul>")
    for key, title in figure_list:
        if key != "cuts":
            parts += [f"<h2>{e(title)}</h2>", image(key, title)]
    if any(sample for _, _, sample in samples):
        parts += [
            "<h2>Samples</h2>",
            f"<p>Each trained model continues {e(_continued(comparison))}.</p>",
        ]
        for strategy, seed, sample in samples:
            parts += [f"<h3>{e(strategy)} (seed {seed})</h3>", f"<pre>{e(sample)}</pre>"]
    parts += ["<h2>Files</h2>", "<ul>"]
    for strategy, seed, directory in runs:
        if directory:
            href = f"{directory}/metrics.jsonl"
            parts.append(f'<li>{e(strategy)} seed {seed}: <a href="{e(href)}">{e(href)}</a></li>')
    parts += [
        '<li><a href="summary.json">summary.json</a>: the table\'s numbers per run and per strategy</li>',
        '<li><a href="report.md">report.md</a> with the figures as PNG files beside it</li>',
        "</ul>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
