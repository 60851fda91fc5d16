"""Lightning's ``fit(..., ckpt_path=...)`` from a checkpoint written in the middle of an epoch.

Reference: the uninterrupted Lightning run over the same data (float64): a run stopped
after a mid-epoch checkpoint and resumed from it in a fresh ``Trainer`` must end with its
weights, bit for bit, and repeat its batch losses. A loader that cannot resume where the
checkpoint was written (a ``DataLoader`` around ``StreamBatches``) is refused in one line.
"""

from __future__ import annotations

import warnings

import pytest
import torch

L = pytest.importorskip("lightning", reason="the lightning extra is not installed")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

import tbptt  # noqa: E402
from tbptt.integrations.lightning import StreamBatches, TruncatedBPTT  # noqa: E402

V, H, B, LENGTH, BATCHES = 7, 4, 3, 14, 6  # an epoch: 6 batches of 14 rows of 3 streams

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def tokens() -> torch.Tensor:
    """A period-7 cycle with a few random tokens: (N,) ids, BATCHES * LENGTH steps a stream."""
    n = (BATCHES * LENGTH + 1) * B
    g = torch.Generator().manual_seed(3)
    noise = torch.rand(n, generator=g) < 0.2
    return torch.where(noise, torch.randint(0, V, (n,), generator=g), torch.arange(n) % V)


class LitLM(TruncatedBPTT, L.LightningModule):
    def __init__(self, strategy: str):
        super().__init__()
        torch.manual_seed(0)
        config = tbptt.ModelConfig(
            vocab_size=V, kind="gru", hidden_size=H, num_layers=1, embedding_size=3, dropout=0.0
        )
        self.model = tbptt.RecurrentLM(config).double()
        self.configure_tbptt(strategy, clip=1.0, seed=0)
        self.losses: list[float] = []

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.losses.append(self.tbptt_record["loss"])
        return loss


class Killed(Exception):
    """Stands for the process dying right after the checkpoint was written."""


class CheckpointThenDie(L.Callback):
    def __init__(self, after: int, path):
        self.after, self.path, self.seen = after, path, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.after:
            trainer.save_checkpoint(self.path)
            raise Killed


def fit(module, loader, *, ckpt_path=None, callbacks=(), limit=None):
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=limit,
        accelerator="cpu",
        devices=1,
        precision="64-true",
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader, ckpt_path=ckpt_path)


def weights(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# Stopped after batch 3 (mid-epoch), after batch 6 (the last of the first epoch) and
# after batch 9 (mid-way through the second).
@pytest.mark.parametrize("after", [3, BATCHES, BATCHES + 3])
@pytest.mark.parametrize("strategy", ["regular:7", "randomized:7"])
def test_a_mid_epoch_checkpoint_resumes_to_the_uninterrupted_weights(strategy, after, tmp_path):
    straight = LitLM(strategy)
    fit(straight, StreamBatches(tokens(), B, LENGTH))
    assert len(straight.losses) == 2 * BATCHES

    path = tmp_path / "mid.ckpt"
    stopped = LitLM(strategy)
    with pytest.raises(Killed):
        fit(stopped, StreamBatches(tokens(), B, LENGTH), callbacks=[CheckpointThenDie(after, path)])
    assert stopped.losses == straight.losses[:after]

    resumed = LitLM(strategy)
    fit(resumed, StreamBatches(tokens(), B, LENGTH), ckpt_path=path)
    assert resumed.losses == straight.losses[after:]
    for a, b in zip(weights(resumed), weights(straight), strict=True):
        assert a.dtype == torch.float64
        assert torch.equal(a, b)


class Die(L.Callback):
    def __init__(self, after: int):
        self.after, self.seen = after, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.after:
            raise Killed


def test_a_model_checkpoint_every_n_train_steps_resumes_exactly(tmp_path):
    # regular:7 takes 2 optimizer steps a batch: step 6 is the end of batch 3 of 6.
    straight = LitLM("regular:7")
    fit(straight, StreamBatches(tokens(), B, LENGTH))
    every = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    with pytest.raises(Killed):
        fit(LitLM("regular:7"), StreamBatches(tokens(), B, LENGTH), callbacks=[every, Die(5)])
    resumed = LitLM("regular:7")
    fit(resumed, StreamBatches(tokens(), B, LENGTH), ckpt_path=tmp_path / "epoch=0-step=6.ckpt")
    assert resumed.losses == straight.losses[3:]
    for a, b in zip(weights(resumed), weights(straight), strict=True):
        assert torch.equal(a, b)


def test_a_mid_epoch_resume_through_a_dataloader_is_refused_in_one_line(tmp_path):
    # A DataLoader has no position Lightning can save: it would start the epoch again at
    # batch 0 under the state the module carried out of batch 3.
    def loader():
        return torch.utils.data.DataLoader(StreamBatches(tokens(), B, LENGTH), batch_size=None)

    path = tmp_path / "mid.ckpt"
    with pytest.raises(Killed):
        fit(LitLM("regular:7"), loader(), callbacks=[CheckpointThenDie(3, path)])
    resumed = LitLM("regular:7")
    with pytest.raises(tbptt.ConfigError) as refused:
        fit(resumed, loader(), ckpt_path=path)
    message = str(refused.value)
    assert "\n" not in message
    assert "at batch 3 of an epoch" in message and "DataLoader" in message
    assert "pass StreamBatches(...) to fit itself" in message  # the way out
    assert resumed.losses == []  # refused before any batch was trained

    # That checkpoint holds no loader position, so StreamBatches cannot resume it either.
    resumed = LitLM("regular:7")
    with pytest.raises(tbptt.ConfigError, match="resumed at its batch 0") as refused:
        fit(resumed, StreamBatches(tokens(), B, LENGTH), ckpt_path=path)
    assert "\n" not in str(refused.value) and resumed.losses == []


def test_an_end_of_epoch_checkpoint_through_a_dataloader_still_resumes(tmp_path):
    def loader():
        return torch.utils.data.DataLoader(StreamBatches(tokens(), B, LENGTH), batch_size=None)

    straight = LitLM("randomized:7")
    fit(straight, loader())
    path = tmp_path / "epoch.ckpt"
    with pytest.raises(Killed):
        fit(LitLM("randomized:7"), loader(), callbacks=[CheckpointThenDie(BATCHES, path)])
    resumed = LitLM("randomized:7")
    fit(resumed, loader(), ckpt_path=path)
    assert resumed.losses == straight.losses[BATCHES:]
    for a, b in zip(weights(resumed), weights(straight), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_after_the_last_batch_limit_train_batches_allows_is_refused(tmp_path):
    # StreamBatches saved its position 4 of 6; Lightning resumes at the next epoch's batch 0.
    path = tmp_path / "last.ckpt"
    with pytest.raises(Killed):
        fit(
            LitLM("regular:7"),
            StreamBatches(tokens(), B, LENGTH),
            callbacks=[CheckpointThenDie(4, path)],
            limit=4,
        )
    with pytest.raises(tbptt.ConfigError, match="resumed at its batch 4.*limit_train_batches"):
        fit(LitLM("regular:7"), StreamBatches(tokens(), B, LENGTH), ckpt_path=path, limit=4)


def test_a_checkpoint_of_other_batches_is_refused(tmp_path):
    path = tmp_path / "mid.ckpt"
    with pytest.raises(Killed):
        fit(
            LitLM("regular:7"),
            StreamBatches(tokens(), B, LENGTH),
            callbacks=[CheckpointThenDie(3, path)],
        )
    with pytest.raises(tbptt.ConfigError, match="6 batches of 3 streams x 14 rows"):
        fit(LitLM("regular:7"), StreamBatches(tokens(), B, 7), ckpt_path=path)


def test_stream_batches_position_round_trips():
    # Reference: the tokens laid in B contiguous columns, batch i = rows i*T .. (i+1)*T.
    columns = tokens().view(B, -1)  # (B, BATCHES * LENGTH + 1)

    def rows(i):
        return columns[:, i * LENGTH : (i + 1) * LENGTH]  # (B, T)

    batches = StreamBatches(tokens(), B, LENGTH)
    assert batches.state_dict()["batch"] == 0
    seen = iter(batches)
    assert torch.equal(next(seen)["inputs"], rows(0))
    assert torch.equal(next(seen)["inputs"], rows(1))
    assert batches.state_dict()["batch"] == 2

    other = StreamBatches(tokens(), B, LENGTH)
    other.load_state_dict(batches.state_dict())
    rest = [b["inputs"] for b in other]  # this pass: from batch 2
    assert len(rest) == BATCHES - 2 and torch.equal(rest[0], rows(2))
    assert other.state_dict()["batch"] == 0  # every batch handed out: the next pass
    again = [b["inputs"] for b in other]  # starts at the first batch
    assert len(again) == BATCHES and torch.equal(again[0], rows(0))
