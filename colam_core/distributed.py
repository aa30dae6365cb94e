"""Data-parallel training (PyTorch DDP under torchrun): the few collectives the trainer needs.

    torchrun --nproc_per_node=2 -m colam_core train --dataset cifar10 --method colam ...

`setup(device)` joins the process group torchrun describes in the environment
(`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; nccl on
CUDA, gloo on CPU), or uses one the caller already initialised (e.g. under
`torch.multiprocessing.spawn`). Without either, it returns a single-process
`Dist` whose helpers are no-ops, so single-process training is unchanged.

Layout of the work (see docs/RELIABILITY.md, "Scale-out"):
- `batch_size` is the *global* batch: every global batch of the single-process
  run is split into `world_size` contiguous shards (`shard_positions`), so the
  number of steps, the learning-rate schedule and the checkpoint's batch
  counter do not depend on the number of processes.
- Every eval pass (the stage-end soft-label pass, Label Refinery's targets, test
  evaluation, calibration) shards the requested samples with `ShardedData`:
  each sample is seen by exactly one rank, and the per-class sums / counts (or
  per-sample rows) are summed over ranks.
- Only rank 0 writes the run directory and holds its lock; a failure on any
  rank is raised on every rank (`Dist.run`), so no rank waits forever.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import torch

from .errors import DistributedError

#: keys of a method's state_dict that hold per-rank accumulators (summed over ranks when a
#: checkpoint is written; rank 0 resumes with the global sums, the other ranks with zeros)
ADDITIVE_STATE_KEYS = ("sums", "counts")

#: under DDP a stop request (request_stop, Ctrl-C, SIGTERM) is agreed between ranks every this many batches
STOP_SYNC_EVERY = 10

_NO_BAD = -1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with "
                               "torchrun --nproc_per_node=N -m colam_core train ...") from None


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 without a launcher); cheap, needs no process group."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous share of n items: sizes differ by at most one, lower ranks get more."""
    q, r = divmod(n, world)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def shard_positions(n: int, rank: int, world: int, paired: bool = False) -> torch.Tensor:
    """Positions, within a global batch of n entries, that belong to `rank`.

    paired: the batch is [originals (n/2), partners (n/2)] (CS-KD); each rank gets its share of the originals
    followed by their partners, so the pair structure survives.
    """
    if not paired:
        s, e = shard_range(n, rank, world)
        return torch.arange(s, e)
    k = n // 2
    s, e = shard_range(k, rank, world)
    return torch.cat([torch.arange(s, e), torch.arange(k + s, k + e)])


def min_global_batch(num_train: int, batch_size: int) -> int:
    """The smallest number of (original) samples in a global training batch."""
    full, rem = divmod(num_train, batch_size)
    return rem if rem else min(batch_size, num_train)


def global_batch_size(num_train: int, batch_size: int, batch: int) -> int:
    """Number of (original) samples in global batch `batch` of an epoch."""
    return min(batch_size, num_train - batch * batch_size)


@dataclass
class Dist:
    """Where this process stands in data-parallel training; every helper is a no-op for world_size 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False  # we initialised the process group, so close() destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}

    # ------------------------------------------------------------- collectives
    def all_reduce(self, *tensors: torch.Tensor, op: str = "sum") -> None:
        """Reduce tensors in place over ranks (sum or max)."""
        if not self.enabled:
            return
        import torch.distributed as dist
        rop = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        for t in tensors:
            dist.all_reduce(t, op=rop)

    def broadcast_(self, *tensors: torch.Tensor, src: int = 0) -> None:
        """Overwrite tensors in place with rank src's values."""
        if not self.enabled:
            return
        import torch.distributed as dist
        for t in tensors:
            dist.broadcast(t, src=src)

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's tensor along dim 0, in rank order (shapes may differ in dim 0)."""
        if not self.enabled:
            return t
        import torch.distributed as dist
        n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        m = max(sizes)
        padded = torch.zeros((m, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def sync_flags(self, stop: bool, bad_batch: int, device) -> tuple[bool, int]:
        """Agree on (any rank asked to stop, the earliest batch with a non-finite loss on any rank or -1)."""
        if not self.enabled:
            return stop, bad_batch
        big = 1 << 40
        t = torch.tensor([1 if stop else 0, big - bad_batch if bad_batch >= 0 else 0], dtype=torch.long,
                         device=device)
        self.all_reduce(t, op="max")
        stop, enc = bool(t[0]), int(t[1])
        return stop, (big - enc if enc else _NO_BAD)

    def run(self, fn, main_only: bool = False):
        """Call fn() on every rank (or on rank 0 only) and agree on the outcome.

        If fn raises on any rank, every rank raises (the failing rank its own exception, the others a copy
        of the first failure), so no rank is left waiting in a collective. With main_only, every rank
        returns rank 0's result.
        """
        err, result = None, None
        if not main_only or self.is_main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                err = e
        if not self.enabled:
            if err is not None:
                raise err
            return result
        import torch.distributed as dist
        outcomes = [None] * self.world_size
        mine = (_portable(err), result if main_only and self.is_main else None)
        dist.all_gather_object(outcomes, mine)
        first = next((e for e, _ in outcomes if e is not None), None)
        if first is not None:
            if err is not None:
                raise err
            raise first
        return outcomes[0][1] if main_only else result

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if setup() created it."""
        if self.owned:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
            self.owned = False


def _portable(err: BaseException | None):
    """err if it survives pickling (to be sent to the other ranks), else a RuntimeError with its message."""
    if err is None:
        return None
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(err).__name__}: {err}")


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join data-parallel training if launched for it; returns (Dist, this rank's device).

    Uses a process group the caller initialised, else initialises one from torchrun's environment
    when WORLD_SIZE > 1 (nccl for CUDA, gloo otherwise), else returns a single-process Dist.
    """
    import torch.distributed as dist
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and env_world_size() <= 1:
        return Dist(), device
    if device.type == "mps":
        raise DistributedError("data-parallel training runs on CUDA (nccl) or CPU (gloo), not on MPS; "
                               "pass --device cpu or --device cuda")
    owned = False
    if not initialised:
        if not dist.is_available():
            raise DistributedError("this PyTorch build has no torch.distributed; run one process without torchrun")
        for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {var} is not set; launch with "
                                       "torchrun --nproc_per_node=N -m colam_core train ...")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        owned = True
    rank, world = dist.get_rank(), dist.get_world_size()
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        n = torch.cuda.device_count()
        device = torch.device("cuda", local_rank % n)
        torch.cuda.set_device(device)
    elif backend == "nccl":
        raise DistributedError("the process group uses nccl, which needs CUDA tensors, but training runs on "
                               f"{device}; initialise it with backend 'gloo' for CPU training")
    return Dist(rank=rank, world_size=world, local_rank=local_rank, backend=backend, owned=owned), device


class ShardedData:
    """A view of a dataset whose eval passes cover only this rank's contiguous share of the samples.

    `eval_batches(split, batch_size, indices)` yields the rank's share of `indices` (all samples when None);
    the shares of all ranks are disjoint and together are exactly `indices`. Everything else is the dataset's.
    """

    def __init__(self, data, dist: Dist):
        self._data = data
        self._dist = dist

    def __getattr__(self, name):
        return getattr(self._data, name)

    def eval_batches(self, split: str, batch_size: int = 512, indices=None):
        n = self._data.info.num_train if split == "train" else self._data.info.num_test
        if indices is None:
            s, e = shard_range(n, self._dist.rank, self._dist.world_size)
            mine = torch.arange(s, e)
        else:
            idx = torch.as_tensor(indices).reshape(-1)
            s, e = shard_range(idx.numel(), self._dist.rank, self._dist.world_size)
            mine = idx[s:e]
        return self._data.eval_batches(split, batch_size, indices=mine)


__all__ = ["Dist", "DistributedError", "ShardedData", "setup", "shard_range", "shard_positions", "ADDITIVE_STATE_KEYS",
           "STOP_SYNC_EVERY", "env_world_size", "launched_rank", "min_global_batch", "global_batch_size"]
