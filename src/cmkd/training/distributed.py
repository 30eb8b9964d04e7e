"""Distributed data-parallel training on PyTorch's own engine (``torch.distributed``).

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``),
``cmkd run`` joins a process group (gloo on CPU, nccl on CUDA); :func:`cmkd.training.fit.fit` then wraps each
trained model
and its loss in DistributedDataParallel and gives every rank its share of each global batch, so the gradient
step equals the single-process one on the same batch. A frozen teacher only supplies cached outputs and is never
wrapped. Only rank 0 writes files. Without ``torchrun`` everything here is a no-op.
"""

from __future__ import annotations

import os
import subprocess

import torch
import torch.distributed as dist

from cmkd.errors import CmkdError

THREADS = 1  # CPU threads of torch (1 is fastest for small edge models) and of the classical fits beside it


def world_size() -> int:
    """Processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    """True on rank 0, the only process that writes outputs."""
    return rank() == 0


def setup(device: str) -> torch.device | None:
    """Join the process group when launched by torchrun with more than one process; returns the device this rank
    should use (``cuda:LOCAL_RANK`` for CUDA), or None when not distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return None
    cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device(f"cuda:{local}")
    return torch.device("cpu")


def cleanup() -> None:
    """Wait for every rank, then leave the process group (a clean exit for every worker)."""
    if world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


def shard(idx, n_ranks: int, r: int):  # noqa: ANN001, ANN201 - numpy arrays
    """This rank's part of a global batch ``idx``: every ``n_ranks``-th sample from ``r``; a rank left with no
    sample (a last batch smaller than the world) gets the batch's first sample so every rank takes the step."""
    part = idx[r::n_ranks]
    return part if len(part) else idx[:1]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise CmkdError(f"device {name!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CmkdError(f"device {name!r} requested but CUDA is not available; use --device auto or cpu")
    return dev


def torchrun(cli_args: list[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmkd <cli_args>`` under torchrun with ``nproc`` local processes (one thread each, a free port on
    127.0.0.1), as a subprocess of this Python; returns the completed process (output captured as text).

    Example: ``torchrun(["run", "exp.yaml", "--out", "runs/ddp", "--quiet"])``.
    """
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           f"--master_port={port}", "-m", "cmkd", *cli_args],
                          capture_output=True, text=True, timeout=timeout, env=env)
