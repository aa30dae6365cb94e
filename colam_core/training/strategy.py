"""Where training runs: one device, or data-parallel over processes (DDP under torchrun).

Every difference between the two lives here (Lightning's Strategy is the model): the trainer, the step and the
evaluation call the same methods on either, and methods reduce their class statistics through `reduce`.

- `batch_size` is the *global* batch: each rank trains on its contiguous share of every global batch, and its
  mean loss is rescaled so DDP's gradient average equals the gradient of the global batch mean.
- Every eval pass covers this rank's share of the samples; sums are all-reduced.
- Only rank 0 writes the run directory; `run(fn)` raises a failure of any rank on every rank.
"""
from __future__ import annotations

import gc

import torch

from .. import distributed as _dist
from ..errors import ConfigError, RunError


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


class SingleDevice:
    """One process on one device: every collective is the identity."""

    enabled = False

    def __init__(self, dist: _dist.Dist, device: torch.device):
        self.dist, self.device = dist, device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def describe(self) -> dict:
        return self.dist.describe()

    # data and model
    def shard_kw(self) -> dict:
        return {}

    def eval_view(self, data):
        return data

    def check_batches(self, num_train: int, batch_size: int) -> None:
        pass

    def wrap(self, model, compile_: bool):
        """(forward used for training, forward used for eval passes)."""
        fwd = self.eval_forward(model, compile_)
        return fwd, fwd

    def eval_forward(self, model, compile_: bool):
        """The forward of eval passes (and of a frozen teacher): the model itself, compiled if asked."""
        return torch.compile(model) if compile_ else model

    # collectives
    def scale_loss(self, loss, batch: int, n_local: int, num_train: int, batch_size: int):
        return loss

    def reduce(self, *tensors: torch.Tensor) -> None:
        """Sum tensors over ranks, in place."""

    def reduce_running(self, running) -> None:
        """The epoch's running sums over every rank's samples."""

    def sync_buffers(self, model) -> None:
        pass

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def stop_requested(self, flag: bool, batch: int | None = None) -> bool:
        """Has a stop been asked for (batch: inside an epoch, after that batch; None: between epochs)?"""
        return flag

    def first_bad(self, bad: int) -> int:
        return bad

    def run(self, fn, main_only: bool = False):
        return self.dist.run(fn, main_only=main_only)

    # checkpoints
    def check_visible(self, path) -> None:
        pass

    def for_save(self, state: dict) -> dict:
        return state

    def after_load(self, running, method) -> None:
        pass

    def close(self, clean: bool = True) -> None:
        self.dist.close()


class DataParallel(SingleDevice):
    """DDP: see the module docstring and docs/RELIABILITY.md ("Scale-out")."""

    enabled = True

    def shard_kw(self) -> dict:
        return {"shard": (self.dist.rank, self.dist.world_size)}

    def eval_view(self, data):
        return _dist.ShardedData(data, self.dist)

    def check_batches(self, num_train: int, batch_size: int) -> None:
        """Every global batch must give each rank at least one sample (an empty shard has no loss to average)."""
        W = self.dist.world_size
        smallest = _dist.min_global_batch(num_train, batch_size)
        if smallest < W:
            ok = next((b for b in range(max(batch_size, W), num_train + 1)
                       if _dist.min_global_batch(num_train, b) >= W), num_train)
            raise ConfigError("batch_size", batch_size, f"a global batch size whose every batch has at least one "
                              f"sample per process: with {num_train} training samples it leaves a batch of "
                              f"{smallest} for {W} processes (e.g. --batch-size {ok})")

    def wrap(self, model, compile_: bool):
        from torch.nn.parallel import DistributedDataParallel
        ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return (torch.compile(ddp) if compile_ else ddp), self.eval_forward(model, compile_)

    def scale_loss(self, loss, batch: int, n_local: int, num_train: int, batch_size: int):
        n_global = _dist.global_batch_size(num_train, batch_size, batch)
        return loss * (n_local * self.dist.world_size / n_global)

    def reduce(self, *tensors: torch.Tensor) -> None:
        self.dist.all_reduce(*tensors)

    def reduce_running(self, running) -> None:
        t = torch.stack([running.loss, running.correct,
                         torch.tensor(float(running.n), dtype=torch.float64, device=self.device)])
        self.dist.all_reduce(t)
        running.loss, running.correct, running.n = t[0], t[1], int(t[2])

    def sync_buffers(self, model) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics): DDP broadcasts them at the start of each
        training forward, so after a stage's last step each rank holds its own shard's; an eval pass must run
        the one model rank 0 checkpoints."""
        self.dist.broadcast_(*model.buffers())

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        return self.dist.gather_cat(t)

    def stop_requested(self, flag: bool, batch: int | None = None) -> bool:
        # a collective: agreed between epochs, and inside an epoch every STOP_SYNC_EVERY batches
        if batch is not None and (batch + 1) % _dist.STOP_SYNC_EVERY:
            return False
        return self.dist.sync_flags(flag, -1, self.device)[0]

    def first_bad(self, bad: int) -> int:
        return self.dist.sync_flags(False, bad, self.device)[1]

    def check_visible(self, path) -> None:
        if not path.exists():
            raise RunError(f"rank {self.dist.rank} cannot see {path}, which rank 0 resumes from; under "
                           "data-parallel training the run directory must be on a filesystem every node shares")

    def for_save(self, state: dict) -> dict:
        """The per-rank accumulators (running loss / accuracy, a method's partial sums) summed over ranks, so
        rank 0's checkpoint holds the whole picture (a collective: every rank calls it)."""
        r = state["running"]
        t = torch.stack([r["loss"].double(), r["correct"].double(), torch.tensor(float(r["n"]), dtype=torch.float64)])
        t = t.to(self.device)
        self.dist.all_reduce(t)
        t = t.cpu()
        state["running"] = {"loss": t[0].clone(), "correct": t[1].clone(), "n": int(t[2])}
        method = dict(state["method"])
        for k in _dist.ADDITIVE_STATE_KEYS:
            if torch.is_tensor(method.get(k)):
                v = method[k].detach().clone().to(self.device)
                self.dist.all_reduce(v)
                method[k] = v.cpu()
        state["method"] = method
        return state

    def after_load(self, running, method) -> None:
        """The checkpoint holds sums over ranks: rank 0 carries them on, the other ranks start from zero."""
        if self.dist.is_main:
            return
        running.zero_()
        mst = method.state_dict()
        if any(torch.is_tensor(mst.get(k)) for k in _dist.ADDITIVE_STATE_KEYS):
            method.load_state_dict({k: (torch.zeros_like(v) if k in _dist.ADDITIVE_STATE_KEYS and torch.is_tensor(v)
                                        else v) for k, v in mst.items()})

    def close(self, clean: bool = True) -> None:
        # free the dropped DDP wrapper now, while the interpreter is fully alive (a gloo group destroyed during
        # interpreter shutdown can abort the process), then tear down together
        gc.collect()
        if clean and self.dist.owned:
            self.dist.barrier()
        self.dist.close()


def make_strategy(device: str = "auto") -> SingleDevice:
    """DataParallel when launched by torchrun (or inside a process group), else SingleDevice."""
    dist, dev = _dist.setup(pick_device(device))
    return (DataParallel if dist.enabled else SingleDevice)(dist, dev)


__all__ = ["SingleDevice", "DataParallel", "make_strategy", "pick_device"]
