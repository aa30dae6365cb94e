"""What the `auto` system options resolve to on this machine, and why (config.json records both).

- ``amp="auto"``: bf16 autocast on CUDA with bf16 support (fp16 + GradScaler on older CUDA); on the CPU bf16
  only where the hardware has AMX (``amx_bf16`` in /proc/cpuinfo: Intel Sapphire Rapids and later), where
  ResNet-20 steps ran 1.77x faster than fp32; on CPUs without it (measured on an AMD EPYC) bf16 ran about 6x
  slower, so they train in float32. Detected, never assumed: the same image runs on both kinds.
- ``compile=None`` (auto): ``torch.compile`` when the run's estimated number of training images (training set x
  epochs of all its trainings) is past the break-even measured for the device (docs/BENCHMARKS.md), and the
  machine can compile (a C++ compiler on the CPU, Triton on CUDA); off for short runs and tests.
- ``channels_last=None``: on for CUDA and the CPU (oneDNN trains conv nets 1.1-1.6x faster in it), off on MPS.

A resumed run keeps what it started with (read back from its config.json) wherever its option is auto, so its
float rounding does not change midway (amp only on the same kind of device).

``deterministic=True`` (GPUs): ``torch.use_deterministic_algorithms(True)``, cuDNN without benchmarking and a
fixed cuBLAS workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``), so a CUDA run and its resume after a kill are
bitwise the same; the CPU paths this project uses are deterministic without it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache

import torch

#: training images past which torch.compile pays for its compilation (every graph a run compiles: training,
#: the partial last batch, eval), per device type; measured by `python -m benchmarks.training` (CPU) and
#: `make gpu-check` (CUDA), see docs/BENCHMARKS.md. Auto compiles past twice that (a margin for other models).
#: CPU: ResNet-20, bf16 on a 2-core AMX Xeon: 139 s of compiling, 1/671 - 1/1105 s saved per image -> 237,000.
#: CUDA: a placeholder until `make gpu-check` measures it (no GPU has run this project yet).
COMPILE_BREAK_EVEN_IMAGES = {"cpu": 240_000, "cuda": 2_000_000}
COMPILE_MARGIN = 2
CUBLAS_WORKSPACE = ":4096:8"
_DTYPE_NAMES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_amx_bf16() -> bool:
    return "amx_bf16" in cpu_flags()


def dtype_name(dtype) -> str:
    """config.json's spelling: "bfloat16", "float16" or "off"."""
    return str(dtype).replace("torch.", "") if dtype is not None else "off"


def resolve_amp(mode: str, device: torch.device, started: str | None = None):
    """(autocast dtype or None, why) for `mode` on `device`; `started`: what a resumed run began with."""
    if mode == "off":
        return None, "off"
    if mode != "auto":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode], mode
    if started is not None and (started == "off" or started in _DTYPE_NAMES):
        return _DTYPE_NAMES.get(started), f"auto: {started}, kept from the run's start"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: bf16 (CUDA with bf16)"
        return torch.float16, "auto: fp16 with a gradient scaler (this GPU has no bf16)"
    if device.type == "cpu":
        if has_amx_bf16():
            return torch.bfloat16, "auto: bf16 (this CPU has amx_bf16)"
        return None, "auto: off (this CPU has no amx_bf16, where bf16 is slower than float32)"
    return None, f"auto: off on {device.type}"


def compile_supported(device: torch.device) -> tuple[bool, str]:
    """Can torch.compile (inductor) run here? (answer, why not)."""
    if not torch._dynamo.is_dynamo_supported():
        return False, "torch.compile is not supported on this Python / platform"
    if device.type == "cpu":
        if not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
            return False, "no C++ compiler (inductor's CPU backend needs one)"
        return True, ""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return False, "Triton is not installed (inductor's CUDA backend needs it)"
        return True, ""
    return False, f"not used on {device.type}"


def resolve_compile(setting: bool | None, device: torch.device, images: int, started: bool | None = None):
    """(compile or not, why): `setting` True / False as given; None (auto) past the device's break-even."""
    if setting is not None:
        return bool(setting), "on" if setting else "off"
    if isinstance(started, bool):
        return started, f"auto: {'on' if started else 'off'}, kept from the run's start"
    break_even = COMPILE_BREAK_EVEN_IMAGES.get(device.type)
    if break_even is None:
        return False, f"auto: off on {device.type}"
    need = COMPILE_MARGIN * break_even
    if images < need:
        return False, f"auto: off ({images:,} training images < {need:,}, {COMPILE_MARGIN} x the break-even)"
    ok, why = compile_supported(device)
    if not ok:
        return False, f"auto: off ({why})"
    return True, f"auto: on ({images:,} training images >= {need:,}, {COMPILE_MARGIN} x the break-even)"


def resolve_channels_last(setting: bool | None, device: torch.device, started=None) -> bool:
    if setting is not None:
        return setting
    if isinstance(started, bool):
        return started
    return device.type in ("cuda", "cpu")


@dataclass
class SystemChoices:
    """What a run trains with: autocast dtype, memory layout, compile, and why (config.json: `choices`)."""
    amp: torch.dtype | None
    channels_last: bool
    compile: bool
    reasons: dict


def resolve_system(cfg, device: torch.device, num_train: int, existing: dict | None) -> SystemChoices:
    """The auto options of `cfg` on `device`; `existing`: a resumed run's config.json (or None)."""
    started = existing if isinstance(existing, dict) else {}
    same_kind = str(started.get("device", "")).split(":")[0] == device.type
    amp, amp_why = resolve_amp(cfg.amp, device, started.get("amp") if same_kind else None)
    layout = resolve_channels_last(cfg.channels_last, device, started.get("channels_last"))
    images = num_train * cfg.total_epochs
    # runs written before compile had an auto mode record only their configuration's compile (then False)
    was_compiled = started.get("compile", (started.get("config") or {}).get("compile"))
    comp, comp_why = resolve_compile(cfg.compile, device, images, was_compiled)
    return SystemChoices(amp, layout, comp, {"amp": amp_why, "compile": comp_why, "estimated_images": images})


def set_deterministic(enabled: bool):
    """Turn on deterministic algorithms (see the module docstring); returns a function that restores the
    previous settings (they are process-wide). A no-op when not enabled."""
    if not enabled:
        return lambda: None
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS makes its handle
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True

    def restore():
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[1], before[2]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    return restore


__all__ = ["COMPILE_BREAK_EVEN_IMAGES", "COMPILE_MARGIN", "SystemChoices", "cpu_flags", "has_amx_bf16",
           "resolve_amp", "resolve_compile", "resolve_channels_last", "resolve_system", "set_deterministic",
           "compile_supported", "dtype_name"]
