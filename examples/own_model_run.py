"""Your own recurrent module, your own stream and your own loss, as a tbptt run.

    python examples/own_model_run.py --out runs/mine --epochs 3

writes runs/mine/ (config.json, metrics.jsonl, checkpoints, curves.png, summary.json).
Kill it at any moment (even with SIGKILL) and run the same command again: it continues
from its newest checkpoint and ends with the same weights, bit for bit, and the same
final metrics line as a run that was never interrupted.
"""

import argparse
import json

import torch
from torch import nn

from tbptt import Run, RunConfig, StatefulModule, StreamData, StreamDataset, TrainConfig
from tbptt.train import CheckpointConfig, PerStepLoss


class LeakyCell(nn.Module):
    """h_t = (1 - a) h_{t-1} + a tanh(W x_t + U h_{t-1}); y_t = V h_t. State (B, H)."""

    def __init__(self, hidden_size: int = 16):
        super().__init__()
        self.hidden_size = hidden_size
        self.inp = nn.Linear(1, hidden_size)
        self.rec = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, 1)
        self.leak = nn.Parameter(torch.tensor(0.5))

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size)

    def forward(self, inputs, state):  # inputs (T, B, 1), state (B, H)
        a = torch.sigmoid(self.leak)
        outputs = []
        for x in inputs:
            state = (1 - a) * state + a * torch.tanh(self.inp(x) + self.rec(state))
            outputs.append(self.out(state))
        return torch.stack(outputs), state  # (T, B, 1), (B, H)


def stream(n: int, seed: int) -> StreamData:
    """A noisy sum of two sines; the target is the next value."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n + 1, dtype=torch.float32)
    x = torch.sin(0.07 * t) + 0.5 * torch.sin(0.31 * t) + 0.1 * torch.randn(n + 1, generator=g)
    return StreamData(x[:-1, None], x[1:, None])  # inputs (N, 1), targets (N, 1)


def huber(outputs, targets):  # (T, B, 1), (T, B, 1) -> (T, B) row losses
    return nn.functional.huber_loss(outputs, targets, reduction="none", delta=0.5)[..., 0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--checkpoint-every", default="10")
    args = p.parse_args()

    torch.manual_seed(0)
    model = StatefulModule(LeakyCell(16), batch_dim=-2)
    data = StreamDataset(stream(4000, seed=1), stream(800, seed=2))
    config = RunConfig(
        train=TrainConfig(strategy="randomized:20", epochs=args.epochs, batch_size=8, lr=3e-3),
        checkpoint=CheckpointConfig(every=args.checkpoint_every),
    )
    result = Run(
        args.out, model=model, data=data, config=config, objective=PerStepLoss(huber)
    ).fit()
    if result.code == 0:
        print(json.dumps({k: result.summary[k] for k in ("epochs", "steps", "val_loss")}))
    raise SystemExit(result.code)


if __name__ == "__main__":
    main()
