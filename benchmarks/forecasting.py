"""Forecasts against their baselines on the shared real series: the default series recipe
(a recurrent core plus a linear autoregressive highway, :class:`tbptt.models.forecast.ForecastNet`)
against persistence, the training mean, seasonal naive and the least-squares AR baseline.

Every number is a held-out RMSE / MAE in the data's own units over the same validation pairs
(the last 10% of each series): the baselines are fitted on the training pairs only
(:mod:`tbptt.data.forecast`), the model is scored as it is trained, state carried from a
warm-up over the series' training rows, one column (``warm_up``, ``eval_batch_size`` 1), so
its highway reads the same lags the AR baseline reads. Each series and seed runs in this
process, one after another; the seconds are the training's (``Trainer.fit``), with the
machine's load average beside them (the machine may be shared).

Writes a JSON record and prints a Markdown table (mean over seeds; each seed's too).

Usage::

    python benchmarks/forecasting.py                                 # 3 shared series, seeds 0 1 2
    python benchmarks/forecasting.py --series cars --seeds 0 --epochs 10
    python benchmarks/forecasting.py --out benchmarks/results/forecasting.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import tbptt  # noqa: F401  (before torch: OpenMP's waiting policy)
from tbptt.data.series import prepare_series
from tbptt.models import ModelConfig
from tbptt.models.forecast import ForecastNet
from tbptt.train import Trainer
from tbptt.train.config import TrainConfig
from tbptt.train.objectives import Regression

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
SERIES = {
    "temps": ("daily-min-temperatures.csv", "Temp"),
    "cars": ("monthly-car-sales.csv", "Sales"),
    "meantemp": ("monthly-mean-temp.csv", "Temperature"),
}
#: the default series recipe (model and training), what the rows of the table ran
RECIPE = {
    "kind": "gru",
    "hidden_size": 32,
    "num_layers": 1,
    "strategy": "regular:35",
    "batch_size": 1,
    "lr": 0.003,
    "epochs": 30,
    "warm_up": 1000,
}


def run(name: str, seed: int, recipe: dict) -> dict:
    """One seed of the recipe on one series: its validation metrics, seconds and setup."""
    import torch  # after tbptt

    file, target = SERIES[name]
    data = prepare_series(SHARED / file, target=target, warm_up=recipe["warm_up"])
    order, penalty = data.highway
    torch.manual_seed(seed)
    config = ModelConfig(
        input_size=data.shape.input_size,
        output_size=data.shape.output_size,
        kind=recipe["kind"],
        hidden_size=recipe["hidden_size"],
        num_layers=recipe["num_layers"],
        embedding_size=0,
        dropout=0.0,
    )
    model = ForecastNet(config, ar_order=order)
    train = data.train_split()
    model.fit_highway(train.inputs, train.targets, train.starts, train.mask, penalty=penalty)
    options = TrainConfig(
        strategy=recipe["strategy"],
        batch_size=recipe["batch_size"],
        epochs=recipe["epochs"],
        lr=recipe["lr"],
        seed=seed,
        eval_batch_size=1,
    )
    trainer = Trainer(
        model,
        train,
        data.valid_split(),
        options,
        objective=Regression(scale=data.target_scale().tolist()),
    )
    start = time.perf_counter()
    record = trainer.fit()[-1]
    seconds = time.perf_counter() - start
    return {
        "series": name,
        "seed": seed,
        "rmse": record["val_rmse"],
        "mae": record["val_mae"],
        "seconds": seconds,
        "load": os.getloadavg()[0],
        "steps": trainer.step,
        "highway": {"order": order, "penalty": penalty},
        "baselines": data.baselines(),
        "highway_alone": data.baseline_info["ridge_ar"],
        "reading": data.reading(),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| series | tbptt (mean of seeds) | highway alone | persistence | seasonal naive | "
        "linear AR | training s (load) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(r["series"] for r in results):
        runs = [r for r in results if r["series"] == name]
        base = runs[0]["baselines"]

        def cell(scores):
            return f"{scores['rmse']:.4g} / {scores['mae']:.4g}" if scores else "-"

        mean = {k: statistics.mean(r[k] for r in runs) for k in ("rmse", "mae", "seconds")}
        load = statistics.mean(r["load"] for r in runs)
        lines.append(
            f"| {name} | {cell(mean)} | {cell(runs[0]['highway_alone'])} | "
            f"{cell(base['persistence'])} | {cell(base.get('seasonal'))} | "
            f"{cell(base['ar'])} | {mean['seconds']:.0f} ({load:.1f}) |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    for key, value in RECIPE.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "forecasting.json")
    args = parser.parse_args(argv)
    recipe = {key: getattr(args, key) for key in RECIPE}
    results = []
    for name in args.series:
        for seed in args.seeds:
            results.append(run(name, seed, recipe))
            r = results[-1]
            print(
                f"{name} seed {seed}: RMSE {r['rmse']:.4f} MAE {r['mae']:.4f} "
                f"({r['seconds']:.1f} s, load {r['load']:.1f}; AR {r['baselines']['ar']['rmse']:.4f})",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"recipe": recipe, "results": results}, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
