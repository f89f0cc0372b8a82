"""Where models run: ``resolve_device``, the one place the default device (CUDA when present, else CPU) is chosen.

Every library entry point that builds or loads a model takes ``device`` (None, a string such as 'cpu', 'cuda',
'cuda:1', or a ``torch.device``) and passes it through ``resolve_device`` before placing the model, so a bad
device fails at once with a one-line message instead of deep inside a CUDA call.
"""

from __future__ import annotations

from typing import Callable

import torch

_AVAILABLE: dict[str, Callable[[], bool]] = {
    "cpu": lambda: True,
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}
"""Device types a model can run on -> whether this machine has one."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run a model on: None -> 'cuda' when ``torch.cuda.is_available()``, else 'cpu'.

    A string or ``torch.device`` is checked and returned as a ``torch.device``: ValueError (one line, naming it)
    for an unknown device, one this machine does not have (e.g. 'cuda' without CUDA) or a CUDA index beyond
    ``torch.cuda.device_count()``; TypeError for anything else. 'cuda' without an index stays the current CUDA
    device (never a literal 'cuda:0').
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a string such as 'cpu' or 'cuda', or a torch.device; got {device!r}")
    try:
        resolved = torch.device(device)
    except RuntimeError:  # torch's message lists every backend it knows, most of which cannot run a model
        resolved = None
    if resolved is None or resolved.type not in _AVAILABLE:
        raise ValueError(f"unknown device {str(device)!r}; use 'cpu', 'cuda', 'cuda:N' (or 'mps', 'xpu'), "
                         "or leave it unset for CUDA when present, else CPU")
    if not _AVAILABLE[resolved.type]():
        raise ValueError(f"device {str(device)!r} asked for but {resolved.type.upper()} is not available on this machine")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} asked for but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return resolved


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively, so bf16 autocast pays off there: CUDA devices that support it;
    CPUs with AVX512-BF16 or AMX (oneDNN's check). Elsewhere bf16 is emulated: a training step of the default
    32x32 world model took 3.7 s under bf16 autocast against 0.36 s in fp32 on a 2-core AVX2 CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
