"""The CPU's model and instruction-set features from /proc/cpuinfo text, and what they say about bf16 and int8."""

from __future__ import annotations

from pathlib import Path

from runtime.cpu import FEATURE_FLAGS, CpuFeatures, detect, parse_cpuinfo

EMPTY = dict.fromkeys(FEATURE_FLAGS, False)

# Two processors of each: only the first is read. Flags trimmed to those that matter and a few neighbours.
AMD_EPYC = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 avx fma avx2 bmi2 sha_ni vaes
processor	: 1
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 avx fma avx2 bmi2 sha_ni vaes amx_bf16
"""

XEON_AMX = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags		: fpu avx fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""

ICE_LAKE = """model name	: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags		: fpu avx fma avx2 avx512f avx512bw avx512_vnni
"""

ARM = """processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm
CPU implementer	: 0x41
"""


def test_an_avx2_cpu_has_no_bf16_unit() -> None:
    cpu = parse_cpuinfo(AMD_EPYC)
    assert cpu.model == "AMD EPYC 7B13"
    assert cpu.features is not None
    assert cpu.features["avx2"] and cpu.features["fma"]
    assert not cpu.features["avx512f"] and not cpu.features["amx_bf16"]  # the second processor's flags are not read
    assert cpu.bf16_unit is False and cpu.int8_dot_product is False
    assert cpu.summary() == "AMD EPYC 7B13; avx2, fma"


def test_a_xeon_with_amx_has_bf16_and_int8_units() -> None:
    cpu = parse_cpuinfo(XEON_AMX)
    assert cpu.model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert cpu.features is not None
    wanted = ("amx_bf16", "amx_int8", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "avx2", "fma")
    assert all(cpu.features[name] for name in wanted)
    assert cpu.bf16_unit is True and cpu.int8_dot_product is True
    assert cpu.to_dict()["bf16_unit"] is True


def test_avx512_without_bf16_is_int8_only() -> None:
    cpu = parse_cpuinfo(ICE_LAKE)
    assert cpu.bf16_unit is False and cpu.int8_dot_product is True


def test_other_architectures_have_none_of_the_x86_features() -> None:
    cpu = parse_cpuinfo(ARM)
    assert cpu.features is not None and not any(cpu.features.values())
    assert cpu.bf16_unit is False
    assert cpu.model  # no "model name" line: the platform's name stands in


def test_without_proc_cpuinfo_the_features_are_unknown(tmp_path: Path) -> None:
    cpu = detect(tmp_path / "cpuinfo")
    assert cpu.features is None and cpu.bf16_unit is None and cpu.int8_dot_product is None
    assert cpu.model
    assert "features unknown" in cpu.summary() and str(tmp_path / "cpuinfo") in cpu.source


def test_this_machine_is_read() -> None:
    cpu = detect()
    assert isinstance(cpu, CpuFeatures) and cpu.model


def test_the_engine_reads_the_same_features_for_its_decisions() -> None:
    xeon = parse_cpuinfo(
        "model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8\n"
    )
    assert xeon.bf16_tiles and xeon.bf16_vectors and xeon.int8_pays
    epyc = parse_cpuinfo("model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n")
    assert not epyc.bf16_tiles and not epyc.bf16_vectors and epyc.int8_pays  # ONNX Runtime's int8 kernels use AVX2
    assert not CpuFeatures.with_flags().int8_pays and not CpuFeatures.with_flags().has("avx2")
    assert CpuFeatures.with_flags("avx512_bf16") == CpuFeatures("a CPU", {**EMPTY, "avx512_bf16": True}, "given")
    unread = CpuFeatures("Apple M2", None, "no /proc/cpuinfo on Darwin")
    assert not unread.bf16_tiles and not unread.int8_pays  # unknown counts as absent: the exact default stays
