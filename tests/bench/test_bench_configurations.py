"""Which contenders a run races on which CPU and engine: bf16 only with a bf16 unit, engine configurations only
where EngineSettings has their fields, each contender's precision."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench import cli, configurations
from bench.configurations import EngineConfiguration, bf16_skip_reason, compute_precision, engine_configurations
from bench.settings import from_args
from runtime.cpu import FEATURE_FLAGS, CpuFeatures

AVX2 = CpuFeatures("AMD EPYC", {name: name in ("avx2", "fma") for name in FEATURE_FLAGS}, "/proc/cpuinfo")
AMX = CpuFeatures("Intel Xeon", dict.fromkeys(FEATURE_FLAGS, True), "/proc/cpuinfo")
UNKNOWN = CpuFeatures("Apple M2", None, "no /proc/cpuinfo on Darwin")
TODAY = frozenset({"provider", "variant", "intra_op_threads"})  # an engine without backend settings
MERGED = TODAY | {"backend", "precision"}


def test_bf16_runs_only_with_a_bf16_unit_unless_told() -> None:
    assert bf16_skip_reason(AMX, "auto", "cpu", "torch bf16") is None
    reason = bf16_skip_reason(AVX2, "auto", "cpu", "torch bf16")
    assert reason is not None and reason.startswith("no bf16 unit") and "torch bf16 would be emulated" in reason
    assert "features unknown" in (bf16_skip_reason(UNKNOWN, "auto", "cpu", "torch bf16") or "")
    assert bf16_skip_reason(AVX2, "always", "cpu", "torch bf16") is None
    assert bf16_skip_reason(AMX, "never", "cpu", "torch bf16") == "--bf16 never"
    assert bf16_skip_reason(AVX2, "auto", "cuda", "torch bf16") is None  # a GPU computes bf16 itself


def test_probes_follow_the_same_rules() -> None:
    skipped = configurations.probe_skips(AVX2, "auto", "cpu")
    assert set(skipped) == {"torch_bf16", "openvino_bf16", "torch_int8"}
    assert skipped["torch_int8"].startswith("no int8 dot-product unit")
    assert configurations.probe_skips(AMX, "auto", "cpu") == {}
    assert set(configurations.probe_skips(AMX, "never", "cpu")) == {"torch_bf16", "openvino_bf16"}
    assert set(configurations.probe_skips(UNKNOWN, "auto", "cpu")) == {"torch_bf16", "openvino_bf16"}


def test_engine_configurations_follow_the_engine_settings_fields() -> None:
    assert engine_configurations(TODAY) == [EngineConfiguration()]
    merged = engine_configurations(MERGED)
    assert [c.name("fp32") for c in merged] == [
        "engine-onnxruntime-f32-fp32",
        "engine-openvino-f32-fp32",
        "engine-openvino-bf16-fp32",
        "engine-auto-fp32",
    ]
    assert EngineConfiguration().name("int8") == "engine-int8"  # the names of earlier results
    assert EngineConfiguration("openvino", "bf16").fields == {"backend": "openvino", "precision": "bf16"}


@pytest.mark.parametrize(
    ("kind", "variant", "precision", "expected"),
    [
        ("torch", "fp32", None, "fp32"),
        ("torch", "fp32", "bf16", "bf16"),
        ("engine", "int8", None, "int8"),
        ("engine", "q4", None, "fp32"),
        ("engine", "fp16", None, "fp16"),
        ("engine", "fp32", "bf16", "bf16"),
        ("openvino", "fp32", "f32", "fp32"),
    ],
)
def test_each_contender_computes_in_one_precision(kind: str, variant: str, precision: str, expected: str) -> None:
    assert compute_precision(kind, variant, precision) == expected


def _lineup(cpu: CpuFeatures, fields: frozenset[str], *args: str, openvino: bool = True) -> cli.Lineup:
    settings = from_args(["--checkpoint", "ckpt", "--model-dir", "models/m", *args])
    return cli.contender_specs(settings, ("fp32", "int8"), cpu, fields, openvino, lambda v: v == "fastest")


def test_an_avx2_cpu_skips_every_bf16_contender_with_its_reason() -> None:
    lineup = _lineup(AVX2, MERGED)
    names = [s.name for s in lineup.specs]
    assert names == [
        "pytorch-eager",
        "engine-onnxruntime-f32-fp32",
        "engine-onnxruntime-f32-int8",
        "engine-openvino-f32-fp32",
        "engine-auto-fastest",
    ]
    assert set(lineup.skipped) == {"pytorch-eager-bf16", "engine-openvino-bf16-fp32"}
    assert all(reason.startswith("no bf16 unit") for reason in lineup.skipped.values())
    assert lineup.server_engine == (("backend", "onnxruntime"), ("precision", "f32"))
    assert cli.served_contender(lineup.specs, "fp32", lineup.server_engine) == "engine-onnxruntime-f32-fp32"


def test_an_amx_cpu_races_bf16_and_an_engine_without_backends_races_its_variants() -> None:
    lineup = _lineup(AMX, TODAY, "--openvino-vision")
    specs = {s.name: s for s in lineup.specs}
    assert list(specs) == [
        "pytorch-eager",
        "pytorch-eager-bf16",
        "openvino-vision-f32",
        "openvino-vision-bf16",
        "engine-fp32",
        "engine-int8",
    ]
    assert not lineup.skipped and lineup.server_engine == ()
    assert specs["pytorch-eager-bf16"].command()[-2:] == ["--precision", "bf16"]
    assert "--backend" not in specs["engine-fp32"].command()
    assert cli.served_contender(lineup.specs, "fp32", ()) == "engine-fp32"
    openvino = _lineup(AMX, MERGED).specs
    bf16 = next(s for s in openvino if s.name == "engine-openvino-bf16-fp32")
    assert bf16.command()[-4:] == ["--backend", "openvino", "--precision", "bf16"]


def test_missing_openvino_and_flags_leave_contenders_out() -> None:
    lineup = _lineup(AMX, MERGED, "--openvino-vision", openvino=False)
    assert not any("openvino" in s.name for s in lineup.specs)
    assert lineup.skipped["openvino-vision-f32"] == "openvino is not installed"
    assert lineup.skipped["engine-openvino-bf16-fp32"] == "openvino is not installed"
    names = [s.name for s in _lineup(AMX, TODAY, "--bf16", "never").specs]
    assert names == ["pytorch-eager", "engine-fp32", "engine-int8"]


def test_the_engine_settings_fields_and_variants_are_read_from_the_engine() -> None:
    assert configurations.engine_settings_fields() >= TODAY
    assert configurations.accepts_variant("fp32") and not configurations.accepts_variant("no-such-variant")
    assert replace(EngineConfiguration(), variants=("fp32",)).fields == {}


def test_quick_results_stay_out_of_the_kept_results() -> None:
    assert str(from_args(["--quick"]).out) == "build/bench-quick"
    assert str(from_args([]).out) == "bench/results"
    assert str(from_args(["--quick", "--out", "elsewhere"]).out) == "elsewhere"


def test_fastest_is_timed_as_what_it_chose_or_left_to_the_same_configuration() -> None:
    settings = from_args(["--checkpoint", "ckpt", "--model-dir", "models/m"])
    int8 = lambda: ("onnxruntime", "f32", "int8", "int8 dot products")  # noqa: E731
    lineup = cli.contender_specs(settings, ("fp32", "int8"), AVX2, MERGED, True, lambda v: v == "fastest", int8)
    assert "engine-auto-fastest" not in [s.name for s in lineup.specs]
    assert lineup.skipped["engine-auto-fastest"] == (
        "chose onnxruntime, f32, int8 (int8 dot products): measured as engine-onnxruntime-f32-int8"
    )
    bf16 = lambda: ("openvino", "bf16", "fp32", "AMX")  # noqa: E731
    amx = cli.contender_specs(settings, ("fp32", "int8"), AMX, MERGED, True, lambda v: v == "fastest", bf16)
    assert "engine-auto-fastest" not in [s.name for s in amx.specs]  # engine-openvino-bf16-fp32 runs there
    only_fp32 = lambda: ("openvino", "f32", "int8", "only OpenVINO")  # noqa: E731
    other = cli.contender_specs(settings, ("fp32", "int8"), AVX2, MERGED, True, lambda v: v == "fastest", only_fp32)
    spec = next(s for s in other.specs if s.name == "engine-auto-fastest")
    assert (spec.backend, spec.precision, spec.variant) == ("openvino", "f32", "int8")
