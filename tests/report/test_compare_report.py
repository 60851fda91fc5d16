"""The comparison report: numbers traced back to the JSON lines, files and HTML, the cut picture."""

import base64
import json
import math
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

from tbptt.report.figures import window_plan
from tbptt.report.summary import Stat

PNG = b"\x89PNG\r\n\x1a\n"


def markdown_table(text: str) -> dict[str, dict[str, str]]:
    """{strategy: {column title: cell}} from the report's Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def cell_mean(cell: str) -> float:
    return float(cell.split("±")[0].replace(",", ""))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_table_numbers_are_recomputed_from_the_json_lines(report_dir):
    comparison, paths, out = report_dir
    table = markdown_table(paths.markdown.read_text())
    assert set(table) == {"full", "regular:6", "randomized:6"}
    for spec in table:
        tokens_per_s, val_ppl, steps, clip = [], [], [], []
        for seed in (0, 1):
            slug = spec.replace(":", "-")
            records = jsonl(out / "runs" / f"{slug}-seed{seed}" / "metrics.jsonl")
            epochs = [r for r in records if r["event"] == "epoch"]
            step_records = [r for r in records if r["event"] == "step"]
            tokens_per_s.append(
                sum(r["tokens"] for r in epochs) / sum(r["seconds"] for r in epochs)
            )
            val_ppl.append(math.exp(epochs[-1]["val_loss"]))
            steps.append(len(step_records))
            clip.append(sum(r["clipped"] for r in step_records) / len(step_records))
        row = table[spec]
        # Formatting rounds tokens/s to an integer and perplexity to 3 decimals.
        assert abs(cell_mean(row["tokens/s"]) - statistics.fmean(tokens_per_s)) <= 0.5
        assert abs(cell_mean(row["val ppl"]) - statistics.fmean(val_ppl)) <= 5e-4
        assert abs(cell_mean(row["clip rate"]) - statistics.fmean(clip)) <= 5e-4
        assert cell_mean(row["steps"]) == statistics.fmean(steps)
        # Two seeds: the spread is the sample standard deviation of the per-seed values.
        spread = float(row["val ppl"].split("±")[1])
        assert abs(spread - statistics.stdev(val_ppl)) <= 5e-4


def test_summary_json_agrees_with_the_table(report_dir):
    _, paths, _ = report_dir
    summary = json.loads(paths.summary.read_text())
    table = markdown_table(paths.markdown.read_text())
    for row in summary["strategies"]:
        assert (
            f"{row['tokens_per_s']['mean']:,.0f}"
            == table[row["strategy"]]["tokens/s"].split(" ")[0]
        )
    assert len(summary["runs"]) == 6
    assert [v["claim"] for v in summary["verdicts"]][0].startswith(
        "Regular truncation is much faster"
    )


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.refs = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.refs.append(attrs[key])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def test_html_is_well_formed_and_every_reference_resolves(report_dir):
    _, paths, out = report_dir
    text = paths.html.read_text()
    assert text.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    images = [r for r in checker.refs if r.startswith("data:")]
    assert len(images) == 4  # cuts, validation, gap, gradient norms: embedded, self-contained
    for ref in images:
        assert ref.startswith("data:image/png;base64,")
        assert base64.b64decode(ref.split(",", 1)[1]).startswith(PNG)
    files = [r for r in checker.refs if not r.startswith("data:")]
    assert len(files) >= 6 + 2  # six metrics files, summary.json, report.md
    for ref in files:
        assert (out / ref).is_file(), ref


def test_markdown_figures_exist_and_are_png(report_dir):
    _, paths, out = report_dir
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", paths.markdown.read_text())
    assert sorted(refs) == ["cuts.png", "gap.png", "grad_norms.png", "validation.png"]
    for ref in refs:
        data = (out / ref).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    links = re.findall(r"\]\(((?:runs/|summary)[^)]+)\)", paths.markdown.read_text())
    assert len(links) == 7 and all((out / link).is_file() for link in links)


def test_report_has_every_section_and_a_sample_per_run(report_dir):
    comparison, paths, _ = report_dir
    md = paths.markdown.read_text()
    for heading in (
        "How each strategy cuts",
        "Results",
        "Verdicts",
        "Validation perplexity",
        "gap",
        "Gradient norms",
        "Samples",
    ):
        assert heading in md
    assert md.count("time traveller") >= len(comparison.runs)  # the prefix of every sample
    for run in comparison.runs:
        assert run.sample.startswith("time traveller") and len(run.sample) > len("time traveller")


def test_cut_picture_windows_are_the_runs_windows(report_dir):
    # The picture plans windows with the strategy object and the seed; with sequential
    # sampling these must be exactly the windows the run trained on (its step records).
    comparison, _, _ = report_dir
    for run in comparison.runs:
        trained = [r["length"] for r in run.records if r["event"] == "step"]
        planned = window_plan(
            run.strategy, run.seed, comparison.stream_steps, sum(trained[:-1]) + 1
        )
        assert [w.length for w in planned][: len(trained)] == trained
    regular = window_plan("regular:6", 0, comparison.stream_steps, 30)
    assert [w.length for w in regular] == [6] * 5
    assert [w.length for w in window_plan("full", 0, 345, 30)] == [345]


def test_opening_is_the_first_stream_in_order(report_dir):
    comparison, _, _ = report_dir
    from tests.report.conftest import tiny_text

    assert "".join(comparison.opening) == tiny_text()[: len(comparison.opening)]


def test_stat_mean_and_sample_spread():
    s = Stat.of([1.0, 2.0, 4.0, math.nan])
    assert s.n == 3 and s.mean == 7 / 3
    assert math.isclose(
        s.std, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert Stat.of([5.0]).format() == "5.000"
    assert Stat.of([]).format() == "n/a"


def test_the_report_says_what_its_samples_continue(report_dir):
    import dataclasses

    from tbptt.report.compare import _continued

    comparison, paths, _ = report_dir
    assert "Each trained model continues " + _continued(comparison) in paths.markdown.read_text()
    assert repr(comparison.config.prefix) in _continued(comparison)
    no_prefix = dataclasses.replace(
        comparison, config=dataclasses.replace(comparison.config, prefix="")
    )
    said = _continued(no_prefix)
    assert "first 10 tokens of the validation text" in said and "''" not in said
