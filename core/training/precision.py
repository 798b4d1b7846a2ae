"""Which precision a run trains in: ``train.dtype`` resolved against the device.

``bf16`` and ``fp32`` are taken as asked. ``auto`` chooses bf16 autocast on CUDA and on CPUs
that multiply bf16 matrices natively (AVX512-BF16 or AMX on x86, the BF16 extension on arm64,
FEAT_BF16 on Apple silicon), fp32 elsewhere: without those instructions a CPU emulates bf16
products and runs them several times slower than fp32 (about 1 against 35-100 GFLOP/s measured
on an AVX2-only EPYC), with them about 3x faster (AVX512-BF16, Zen 4).

Detection reads the CPU's own report (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), not
the torch build's capability string, which says which kernels were compiled, not whether the
chip runs them; the sources are arguments so tests can fake either answer.
"""

import functools
import platform
import subprocess
from collections.abc import Callable

import torch

CPUINFO = "/proc/cpuinfo"
X86_FLAGS = ("avx512_bf16", "amx_bf16")  # either gives native bf16 dot products
ARM_FEATURE = "bf16"
MACOS_KEY = "hw.optional.arm.FEAT_BF16"


def read_cpuinfo(path: str = CPUINFO) -> str:
    """The text of /proc/cpuinfo; '' where there is none (not Linux, a sandbox)."""
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def read_sysctl(key: str) -> str:
    """``sysctl -n key``'s output; '' where the key or the command is missing."""
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def cpuinfo_features(text: str) -> set[str]:
    """The feature words of the first processor in cpuinfo text: x86's ``flags`` line or arm64's
    ``Features`` line (every core reports the same)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def native_bf16(system: str | None = None, machine: str | None = None,
                cpuinfo: Callable[[], str] = read_cpuinfo,
                sysctl: Callable[[str], str] = read_sysctl) -> bool:
    """Whether this CPU multiplies bf16 natively. `system`/`machine` default to this host's
    (platform.system(), platform.machine()); `cpuinfo` and `sysctl` read the CPU's report."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system == "Darwin":
        return sysctl(MACOS_KEY) == "1"
    if system != "Linux":
        return False
    features = cpuinfo_features(cpuinfo())
    if machine in ("x86_64", "amd64"):
        return any(flag in features for flag in X86_FLAGS)
    if machine in ("aarch64", "arm64"):
        return ARM_FEATURE in features
    return False


@functools.cache
def host_native_bf16() -> bool:
    """:func:`native_bf16` of this host, read once per process (autocast asks every micro-step)."""
    return native_bf16()


def resolve_dtype(requested: str, device: torch.device | str,
                  native: Callable[[], bool] | None = None) -> str:
    """``train.dtype`` as the run will train: "bf16" or "fp32". `native` answers whether the
    CPU has native bf16 (default :func:`host_native_bf16`; asked only for ``auto`` on a CPU)."""
    native = native or host_native_bf16
    if requested in ("bf16", "fp32"):
        return requested
    if requested != "auto":
        raise ValueError(f"dtype must be auto, fp32 or bf16; got {requested!r}")
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16"
    return "bf16" if kind == "cpu" and native() else "fp32"


def precision_record(requested: str, device: torch.device | str,
                     native: Callable[[], bool] | None = None) -> dict:
    """What a run's records say about its precision: the dtype it trains in and whether the CPU
    multiplies bf16 natively (config.json's "precision", --plan's line)."""
    native = native or host_native_bf16
    return {"dtype": resolve_dtype(requested, device, native), "native_bf16_cpu": native()}


__all__ = ["native_bf16", "host_native_bf16", "resolve_dtype", "precision_record", "cpuinfo_features",
           "read_cpuinfo", "read_sysctl"]
