"""The training device: which one, its name, mixed precision, loader workers, memory.

Core helpers shared by training, evaluation and the benchmark.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import sys
from typing import Optional, Union

import torch

from .errors import DataError


def pick_device(device: Union[str, torch.device, None] = None) -> torch.device:
    """``None``/``"auto"``: CUDA when there is one, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError("device 'cuda' asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def device_name(device: torch.device, processes: int = 1) -> str:
    """The device in words, for labelling measured speeds: GPU model, or CPU and its threads."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return name if processes == 1 else f"{processes} processes x {name}"


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Mixed precision on CUDA when `dtype` is given; float32 otherwise."""
    if device.type == "cuda" and dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA's; a CPU's is done already): what a timed section starts and ends with."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask: what Slurm or taskset granted)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_processes() -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def default_workers(device: torch.device, processes: Optional[int] = None, *, decoding: bool = True) -> int:
    """Loader workers per process: the machine's cores shared by its training processes.

    On CUDA every core but one per process decodes (at most 12 each). On CPU the
    model step needs the cores too: one worker when images are decoded from files
    or augmented in the loader (`decoding`), none when the loader only gathers
    arrays that the device path augments in the training process.
    """
    processes = local_processes() if processes is None else max(1, processes)
    share = cpu_cores() // processes
    if device.type == "cuda":
        return max(1, min(12, share - 1))
    return min(1, share - 1) if decoding else 0


def peak_mem_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset; on CPU the process's peak resident memory so far."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


# nvJPEG's NVJPEG_STATUS_ALLOCATOR_FAILURE, which torchvision reports as a number after its message. torchvision 0.26's
# decode_jpegs_cuda.cpp checks each nvJPEG call with "Failed to <what>: <status>" ("Failed to initialize batch
# decoding: 5", "Failed to decode batch: 5", "Failed to decode jpeg stream: 5", ...) and raises whatever the decode
# threw again as "Error while decoding JPEG images: <that message>"; other versions write "nvjpegDecode failed: 5".
# A "Failed to" status counts only inside that message; "Failed to synchronize CUDA stream: <n>" carries a CUDA error.
NVJPEG_ALLOCATOR_FAILURE = 5
_NVJPEG_STATUS = re.compile(r"Error while decoding JPEG images:.*?Failed to (?!synchronize CUDA stream)[A-Za-z ]+?:\s*(\d+)\b"
                            r"|nvjpeg\w*\s+failed(?: with status)?:?\s*(\d+)", re.IGNORECASE | re.DOTALL)


def nvjpeg_status(text: str) -> Optional[int]:
    """The nvJPEG status number in one of torchvision's error messages, or None."""
    found = _NVJPEG_STATUS.search(text)
    return int(found.group(1) or found.group(2)) if found else None


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA's), the CPU allocator's refusal, or nvJPEG's allocator failing. nvJPEG
    allocates outside torch's caching allocator, so it fails exactly when that cache holds the memory; torchvision
    raises it as a plain RuntimeError with nvJPEG's status number (5, :func:`nvjpeg_status`) or, in some versions,
    its name. Any other status is a file nvJPEG cannot read (2: NVJPEG_STATUS_INVALID_PARAMETER, 3:
    NVJPEG_STATUS_BAD_JPEG, 4: NVJPEG_STATUS_JPEG_NOT_SUPPORTED), which decode_images decodes on the CPU."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return ("DefaultCPUAllocator: can't allocate memory" in text or "ALLOCATOR_FAILURE" in text
            or "out of memory" in text.lower() or nvjpeg_status(text) == NVJPEG_ALLOCATOR_FAILURE)


def free_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so a smaller batch can fit."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
