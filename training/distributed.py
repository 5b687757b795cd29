"""Multi-process training with PyTorch DDP, launched by ``torchrun`` (torch.distributed.run).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when
they are absent the run is a plain single process and every helper here is a no-op, so the
training code has one path for both. Only rank 0 writes files; state that every rank needs
(a checkpoint to resume from) is read by rank 0 and broadcast, so nodes need no shared disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.config import DistributedBackend, TrainingDevice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: its rank, the job size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    #: True when this context created the process group (and so must destroy it).
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        if not self.is_distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP-wrap ``module`` (which syncs rank 0's weights to all ranks); as is when alone."""
        if not self.is_distributed:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def _collective_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"Environment variable {name} must be an integer, got {raw!r}.") from exc


def resolve_device(device: TrainingDevice | str, local_rank: int) -> torch.device:
    """``auto`` picks this rank's GPU when CUDA works, else the CPU."""
    choice = TrainingDevice.parse(device, "Config key 'runtime.device'")
    if choice is TrainingDevice.CPU or (
        choice is TrainingDevice.AUTO and not torch.cuda.is_available()
    ):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("Config key 'runtime.device' is 'cuda' but CUDA is not available here.")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(
    backend: DistributedBackend | str = DistributedBackend.AUTO,
    device: TrainingDevice | str = TrainingDevice.AUTO,
) -> DistContext:
    """Join the torchrun job described by the environment (or run alone without one).

    ``backend="auto"`` is nccl when the device is a GPU and gloo on the CPU.
    """
    choice = DistributedBackend.parse(backend, "Config key 'runtime.backend'")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    torch_device = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=torch_device)
    if choice is DistributedBackend.AUTO:
        on_gpu = torch_device.type == "cuda"
        choice = DistributedBackend.NCCL if on_gpu else DistributedBackend.GLOO
    if choice is DistributedBackend.NCCL and torch_device.type != "cuda":
        raise ValueError("Config key 'runtime.backend' is 'nccl', which needs a CUDA device.")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=choice.value, rank=rank, world_size=world_size)
        owns = True
    log.info("rank %d/%d on %s (backend %s)", rank, world_size, torch_device, choice.value)
    return DistContext(rank, world_size, local_rank, torch_device, owns)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group if this context created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, values): same weights, same
    digest, whatever device they live on."""
    h = hashlib.sha256()
    for name, tensor in sorted(unwrap(module).state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas_agree(ctx: DistContext, module: nn.Module, what: str) -> str:
    """Raise if the ranks' weights differ (a DDP bug or a rank that skipped a step)."""
    digest = state_digest(module)
    digests = ctx.all_gather_object(digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"Ranks hold different weights after {what}: {digests}.")
    return digest
