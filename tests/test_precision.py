"""core.training.precision: native bf16 read from the CPU's own report (faked both ways here),
``dtype=auto`` resolved against it, and the trainer's autocast following the resolution."""

import pytest
import torch

from core.config import apply_overrides, preset
from core.training import precision
from core.training.trainer import autocast_context, run_record

ZEN4_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512_bf16 avx512_vnni\n"
SAPPHIRE_FLAGS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
AVX2_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def _linux(machine: str, text: str) -> bool:
    return precision.native_bf16("Linux", machine, cpuinfo=lambda: text, sysctl=_no_sysctl)


def _no_sysctl(key: str) -> str:
    raise AssertionError("sysctl is asked on macOS only")


def test_linux_x86_has_native_bf16_with_avx512_bf16_or_amx_only():
    assert _linux("x86_64", ZEN4_FLAGS) and _linux("x86_64", SAPPHIRE_FLAGS)
    assert not _linux("x86_64", AVX2_FLAGS)
    assert not _linux("x86_64", "")  # no /proc/cpuinfo: not guessed


def test_linux_arm64_reads_the_features_line():
    assert _linux("aarch64", GRAVITON3) and not _linux("aarch64", GRAVITON2)
    assert not _linux("x86_64", GRAVITON3)  # an arm word on an x86 host means nothing


def test_macos_asks_sysctl_for_feat_bf16():
    def sysctl(answer):
        def read(key):
            assert key == "hw.optional.arm.FEAT_BF16"
            return answer
        return read

    assert precision.native_bf16("Darwin", "arm64", cpuinfo=lambda: "", sysctl=sysctl("1"))
    assert not precision.native_bf16("Darwin", "arm64", cpuinfo=lambda: "", sysctl=sysctl("0"))
    assert not precision.native_bf16("Darwin", "x86_64", cpuinfo=lambda: "", sysctl=sysctl(""))
    assert not precision.native_bf16("Windows", "AMD64", cpuinfo=lambda: ZEN4_FLAGS, sysctl=_no_sysctl)


def test_auto_resolves_to_bf16_only_where_the_cpu_reports_native_bf16():
    native = lambda: _linux("x86_64", ZEN4_FLAGS)  # noqa: E731
    emulated = lambda: _linux("x86_64", AVX2_FLAGS)  # noqa: E731
    assert precision.resolve_dtype("auto", "cpu", native) == "bf16"
    assert precision.resolve_dtype("auto", "cpu", emulated) == "fp32"
    assert precision.resolve_dtype("auto", "cuda", emulated) == "bf16"
    assert precision.resolve_dtype("auto", torch.device("cuda:1"), emulated) == "bf16"
    assert precision.resolve_dtype("bf16", "cpu", emulated) == "bf16"  # asked: taken as asked
    assert precision.resolve_dtype("fp32", "cpu", native) == "fp32"
    with pytest.raises(ValueError, match="dtype must be auto, fp32 or bf16; got 'fp16'"):
        precision.resolve_dtype("fp16", "cpu", native)


@pytest.mark.parametrize("native", [True, False])
def test_the_trainer_autocasts_cpu_auto_runs_as_resolved_and_records_it(monkeypatch, native):
    monkeypatch.setattr(precision, "host_native_bf16", lambda: native)
    config, cpu = preset("micro"), torch.device("cpu")
    with autocast_context(config, cpu):
        assert torch.is_autocast_enabled("cpu") == native
    with autocast_context(apply_overrides(config, ["dtype=fp32"]), cpu):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(apply_overrides(config, ["dtype=bf16"]), cpu):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    record = run_record(config, cpu)
    assert record["precision"] == {"dtype": "bf16" if native else "fp32", "native_bf16_cpu": native}


def test_this_host_gets_an_answer_from_its_own_report():
    """Whatever this machine is, the cached answer is the uncached one, and a bool."""
    assert precision.host_native_bf16() is precision.native_bf16()
