"""The device registry (conformance/devices/): forms, class names, detection, features,
fingerprints, determinism switches, memory and workers of every kind.

This machine has a CPU only: CUDA, ROCm, MPS and XPU are exercised with stand-ins for
``torch.cuda``, ``torch.version.hip``, ``torch.backends.mps`` / ``torch.mps`` and
``torch.xpu`` (monkeypatched), never on their hardware.
"""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch

from conformance import devices
from conformance.devices import REGISTRY, Registry, discover
from conformance.devices.base import DeviceKind
from conformance.devices.cuda import Cuda
from conformance.hardware import (
    HardwareClass,
    available_devices,
    check_available,
    detect_class,
    fingerprint,
    format_fingerprint,
    parse_device,
)
from conformance.identity import Identity, format_identity

GIB = 2**30


# -- the registry --------------------------------------------------------------------
def test_one_module_per_kind_in_order():
    modules = {m.name for m in pkgutil.iter_modules(devices.__path__)} - {"base"}
    assert [k.name for k in devices.KINDS] == ["cpu", "cuda", "rocm", "mps", "xpu"]
    assert modules == {k.name for k in devices.KINDS}
    assert [type(k).__module__ for k in devices.KINDS] == [
        f"conformance.devices.{k.name}" for k in devices.KINDS]
    assert repr(devices.get("rocm")) == "Rocm('rocm')"


def test_forms_and_class_hints_read_as_before():
    assert devices.DEVICE_FORMS == "cpu, cuda, cuda:N, mps, xpu, xpu:N"
    assert REGISTRY.class_hints == ("cpu-<vendor>-<level>[+ext...] (e.g. cpu-amd-avx512+bf16), "
                                    "cuda-sm<NN>, rocm-<arch>, mps or xpu")


@pytest.mark.parametrize("text, value", [
    ("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:0", "cuda:0"), ("cuda:999", "cuda:999"),
    ("mps", "mps"), ("xpu", "xpu"), ("XPU:3", "xpu:3"),
])
def test_device_forms_are_accepted(text, value):
    assert parse_device(text) == value


@pytest.mark.parametrize("text", ["", "gpu", "cpu:0", "mps:0", "cuda:", "cuda:1000", "rocm",
                                  "cuda:N", "xpu:-1", "cuda 0", "hip"])
def test_other_device_text_is_refused_with_the_forms(text):
    with pytest.raises(ValueError) as exc:
        parse_device(text)
    assert str(exc.value) == (f"{text!r} is not a device; accepted: cpu, cuda, cuda:N, mps, "
                              "xpu, xpu:N")


@pytest.mark.parametrize("name, kind", [
    ("cpu-amd-avx512+bf16", "cpu"), ("cpu-intel-avx512+amx+bf16+fp16-onednn_avx2", "cpu"),
    ("cpu-avx512", "cpu"), ("cuda-sm89", "cuda"), ("cuda-sm100", "cuda"),
    ("rocm-gfx90a", "rocm"), ("mps", "mps"), ("xpu", "xpu"),
])
def test_class_names_belong_to_their_kind(name, kind):
    assert HardwareClass(name).name == name
    assert devices.for_class(name) is devices.get(kind)
    assert devices.kind_name(name) == kind
    assert HardwareClass(name).is_cpu == (kind == "cpu")


@pytest.mark.parametrize("name", ["cpu", "cpu-", "cuda-sm", "cuda-89", "rocm-", "mps-1",
                                  "xpu-arc", "gpu", "CPU-amd-avx2", "cuda-sm89 "])
def test_other_class_names_are_refused_with_every_kinds_form(name):
    with pytest.raises(ValueError, match="not a hardware class; expected cpu-<vendor>-<level>"
                       r"\[\+ext...\] \(e.g. cpu-amd-avx512\+bf16\), cuda-sm<NN>, rocm-<arch>, "
                       "mps or xpu"):
        HardwareClass(name)
    assert devices.for_class(name) is None


def test_kind_name_of_an_unknown_class_is_its_first_part():
    assert devices.kind_name("gpu-x") == "gpu" and devices.kind_name("npu") == "npu"


def test_unknown_kind_and_device_type_are_refused():
    with pytest.raises(ValueError, match="no device kind 'npu'; known: cpu, cuda, rocm, mps, "
                       "xpu"):
        devices.get("npu")
    with pytest.raises(ValueError, match="'npu' is not a device; accepted: cpu, cuda"):
        devices.for_device("npu")
    assert devices.of_type("npu") == ()
    assert devices.of_type("cuda:1") == (devices.get("cuda"), devices.get("rocm"))


def test_a_kind_named_twice_is_refused():
    with pytest.raises(ValueError, match="device kinds named twice: cpu, cpu"):
        Registry([devices.get("cpu"), devices.get("cpu")])


class Npu(DeviceKind):
    """A kind the package does not have, to show what one more module brings."""

    name = "npu"
    device_type = "npu"
    forms = ("npu", "npu:N")
    class_pattern = r"npu-v\d+"
    class_hint = "npu-v<N>"
    order = 50
    worker_per_device = True
    count: ClassVar[int] = 2

    def backend(self) -> Any:
        return SimpleNamespace(is_available=lambda: True, device_count=lambda: self.count)

    def class_name(self, device: str) -> str:
        return "npu-v2"


def test_a_new_kind_is_one_object_everything_else_follows():
    reg = Registry([*devices.KINDS, Npu()])
    assert reg.device_forms == "cpu, cuda, cuda:N, mps, xpu, xpu:N, npu, npu:N"
    assert reg.parse("NPU:1") == "npu:1"
    assert reg.class_hints.endswith("mps, xpu or npu-v<N>")
    assert reg.for_class("npu-v2").name == "npu" and reg.for_class("npu-x") is None
    assert reg.for_device("npu:1").class_name("npu:1") == "npu-v2"
    assert reg.available()[-3:] == ["npu", "npu:0", "npu:1"]
    assert Registry([Npu()]).class_hints == "npu-v<N>"


def test_discovery_takes_the_kind_of_every_module(tmp_path, monkeypatch):
    package = tmp_path / "more_devices"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_helpers.py").write_text("X = 1\n")
    (package / "npu.py").write_text(
        "from conformance.devices.base import DeviceKind\n"
        "class Npu(DeviceKind):\n    name = 'npu'\n    device_type = 'npu'\n"
        "    forms = ('npu',)\n    class_pattern = 'npu'\n    class_hint = 'npu'\n"
        "KIND = Npu()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = discover("more_devices")
    assert [k.name for k in kinds] == ["npu"]
    (package / "broken.py").write_text("KIND = 'npu'\n")
    with pytest.raises(TypeError, match=r"more_devices\.broken defines no KIND"):
        discover("more_devices")


# -- the CPU -------------------------------------------------------------------------
def test_cpu_is_always_available_and_asks_no_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("asked torch"))
    assert check_available("cpu") is None
    cpu = devices.get("cpu")
    assert cpu.available() == ["cpu"] and cpu.device_count() == 1 and cpu.is_available()


def test_cpu_class_fingerprint_and_features_come_from_the_cpu_module():
    from conformance.devices.cpu import cpu_class_name, cpu_features, cpu_name

    assert detect_class("cpu").name == cpu_class_name(cpu_features())
    fp = fingerprint("cpu", 3)
    assert list(fp) == ["hardware_class", "device", "device_name", "cpu_isa", "threads",
                        "python", "platform", "torch", "diffusers", "transformers", "numpy",
                        "deterministic", "aten_cpu_capability_env"]
    assert fp["device_name"] == cpu_name() and fp["threads"] == 3
    assert len(format_fingerprint(fp)) == 2  # no accelerator line


def test_cpu_pins_the_ate_level_of_a_class():
    cpu = devices.get("cpu")
    assert cpu.pin_env("cpu-intel-avx512+amx+bf16") == {"ATEN_CPU_CAPABILITY": "avx512"}
    assert cpu.pin_env("cpu-avx2") == {}
    assert devices.get("cuda").pin_env("cuda-sm89") == {}


def test_cpu_dispatch_variables_are_its_features_env(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    env = devices.get("cpu").features("cpu")["env"]
    assert env.get("ONEDNN_MAX_CPU_ISA") == "AVX2" and "CUBLAS_WORKSPACE_CONFIG" not in env
    assert detect_class("cpu").name.endswith("-onednn_avx2")


def test_every_kind_draws_its_noise_on_the_cpu():
    for kind in devices.KINDS:
        gen = kind.generator(7)
        assert gen.device.type == "cpu"
        assert torch.equal(torch.randn(4, generator=gen),
                           torch.randn(4, generator=torch.Generator("cpu").manual_seed(7)))


def test_cpu_keeps_no_peak_so_a_generation_reports_the_rss():
    from conformance.generate import Runner

    cpu = devices.get("cpu")
    cpu.reset_peak_memory("cpu")
    cpu.synchronize("cpu")
    assert cpu.peak_memory_bytes("cpu") is None
    assert Runner("cpu").peak_memory_mb() > 0


# -- CUDA and ROCm (stand-in torch.cuda) -----------------------------------------------
class FakeCuda:
    """What the kinds read of ``torch.cuda``, recording the peak-memory calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int = 2,
                 hip: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0,
                                multi_processor_count=132, total_memory=80 * GIB,
                                gcnArchName="gfx90a:sramecc+:xnack-")
        for name, value in (
            ("is_available", lambda: True), ("device_count", lambda: count),
            ("get_device_properties", lambda index: props),
            ("reset_peak_memory_stats", lambda d: self.calls.append(("reset", d))),
            ("max_memory_allocated", lambda d: 3 * 2**20),
            ("synchronize", lambda d: self.calls.append(("sync", d))),
        ):
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(torch.version, "cuda", None if hip else "12.8")
        monkeypatch.setattr(torch.version, "hip", hip)
        monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
        monkeypatch.setattr(torch._C, "_cuda_getDriverVersion", lambda: 12080, raising=False)


def test_cuda_devices_are_listed_and_checked(monkeypatch):
    FakeCuda(monkeypatch)
    assert available_devices() == ["cpu", "cuda", "cuda:0", "cuda:1"]
    assert check_available("cuda:1") is None
    assert check_available("cuda:2") == ("device 'cuda:2' is not available on this machine; "
                                         "available: cpu, cuda, cuda:0, cuda:1")


def test_without_cuda_its_devices_are_not_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.get("cuda").available() == [] and devices.get("cuda").device_count() == 0
    assert check_available("cuda") == ("device 'cuda' is not available on this machine; "
                                       "available: " + ", ".join(available_devices()))


def test_cuda_class_features_and_fingerprint(monkeypatch):
    FakeCuda(monkeypatch)
    assert devices.for_device("cuda:1") is devices.get("cuda")
    assert detect_class("cuda:1").name == "cuda-sm90"
    features = devices.get("cuda").features("cuda:1")
    assert {k: features[k] for k in ("vendor", "model_name", "sm", "sm_count", "memory_gib",
                                     "driver", "cuda", "hip", "cudnn")} == {
        "vendor": "nvidia", "model_name": "NVIDIA H100 80GB HBM3", "sm": "9.0",
        "sm_count": 132, "memory_gib": 80.0, "driver": 12080, "cuda": "12.8", "hip": None,
        "cudnn": 91000}
    assert set(features["sdpa_backends"]) == {"flash", "mem_efficient", "math", "cudnn"}
    fp = fingerprint("cuda:1", 1)
    assert list(fp)[13:] == ["device_memory_gib", "cuda", "hip", "cudnn", "tf32_matmul",
                             "tf32_cudnn", "cudnn_benchmark", "cublas_workspace_config"]
    assert fp["hardware_class"] == "cuda-sm90" and fp["device_name"] == "NVIDIA H100 80GB HBM3"
    assert format_fingerprint(fp)[2] == (f"conformance: cuda 12.8 hip None cudnn 91000 "
                                         f"tf32={fp['tf32_matmul']}")
    ident = Identity("cuda-sm90", features, {})
    assert "(NVIDIA H100 80GB HBM3; sm 9.0; no probe digests)" in ident.describe()
    assert format_identity(ident)[1].startswith(
        "conformance: gpu NVIDIA H100 80GB HBM3 sm 9.0 x132 80.0 GiB, driver 12080, cuda 12.8, "
        "cudnn 91000, tf32 ")


def test_cuda_driver_version_may_be_missing(monkeypatch):
    FakeCuda(monkeypatch)

    def no_driver() -> int:
        raise RuntimeError("no driver API")

    monkeypatch.setattr(torch._C, "_cuda_getDriverVersion", no_driver, raising=False)
    assert devices.get("cuda").features("cuda")["driver"] is None


def test_rocm_takes_cuda_devices_on_a_hip_build(monkeypatch):
    FakeCuda(monkeypatch, hip="6.4.1")
    kind = devices.for_device("cuda")
    assert kind is devices.get("rocm") and kind.label == "GPU"
    assert detect_class("cuda").name == "rocm-gfx90a"
    assert kind.features("cuda")["vendor"] == "amd"
    assert available_devices() == ["cpu", "cuda", "cuda:0", "cuda:1"]  # CUDA's forms
    fp = fingerprint("cuda", 1)
    assert fp["hip"] == "6.4.1" and format_fingerprint(fp)[2].startswith(
        "conformance: cuda None hip 6.4.1")


def test_cuda_determinism_switches(monkeypatch):
    FakeCuda(monkeypatch)
    for name in ("benchmark", "deterministic", "allow_tf32"):
        monkeypatch.setattr(torch.backends.cudnn, name, True)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "x")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    cuda = devices.get("cuda")
    cuda.prepare(deterministic=False)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    cuda.prepare(deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32  # a property: not monkeypatchable
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        cuda.configure(deterministic=True)
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.allow_tf32
    rocm = type(devices.get("rocm"))
    assert (rocm.prepare, rocm.configure) == (Cuda.prepare, Cuda.configure)  # CUDA's switches


def test_configure_torch_runs_the_kinds_switches_in_order(monkeypatch):
    from conformance.generate import configure_torch

    calls = []

    class Recorder(DeviceKind):
        def prepare(self, deterministic: bool) -> None:
            calls.append(("prepare", deterministic, torch.are_deterministic_algorithms_enabled()))

        def configure(self, deterministic: bool) -> None:
            calls.append(("configure", deterministic,
                          torch.are_deterministic_algorithms_enabled()))

    monkeypatch.setattr(devices, "for_device", lambda device: Recorder())
    state = torch.are_deterministic_algorithms_enabled()
    configure_torch(torch.get_num_threads(), deterministic=state, device="npu")
    assert calls == [("prepare", state, state), ("configure", state, state)]


def test_cuda_memory_and_synchronize(monkeypatch):
    from conformance.generate import Runner

    fake = FakeCuda(monkeypatch)
    cuda = devices.get("cuda")
    cuda.reset_peak_memory("cuda:1")
    cuda.synchronize("cuda:1")
    assert cuda.peak_memory_bytes("cuda:1") == 3 * 2**20
    assert fake.calls == [("reset", "cuda:1"), ("sync", "cuda:1")]
    assert Runner("cuda:1").peak_memory_mb() == 3.0


# -- MPS (stand-in torch.backends.mps / torch.mps) ----------------------------------------
def fake_mps(monkeypatch: pytest.MonkeyPatch, available: bool = True) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: available)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GIB)
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("sync"))
    monkeypatch.setattr("platform.mac_ver", lambda: ("15.5", ("", "", ""), "arm64"))
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    return calls


def test_mps_is_found_and_described(monkeypatch):
    calls = fake_mps(monkeypatch)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert "mps" in available_devices() and check_available("mps") is None
    mps = devices.for_device("mps")
    assert detect_class("mps").name == "mps" and mps.device_count() == 1
    features = mps.features("mps")
    assert features == {"vendor": "apple", "model_name": "Apple MPS (arm64)", "machine": "arm64",
                        "macos": "15.5", "memory_gib": 16.0,
                        "env": {"PYTORCH_ENABLE_MPS_FALLBACK": "1"}}
    assert fingerprint("mps", 1)["device_name"] == "Apple MPS (arm64)"
    ident = Identity("mps", features, {})
    assert "(Apple MPS (arm64); macOS 15.5;" in ident.describe()
    assert format_identity(ident)[1] == ("conformance: mps Apple MPS (arm64), macOS 15.5, "
                                         "16.0 GiB, env PYTORCH_ENABLE_MPS_FALLBACK=1")
    mps.synchronize("mps")
    mps.reset_peak_memory("mps")
    assert calls == ["sync"] and mps.peak_memory_bytes("mps") is None


def test_mps_absent(monkeypatch):
    fake_mps(monkeypatch, available=False)
    assert "mps" not in available_devices() and devices.get("mps").device_count() == 0
    monkeypatch.delattr(torch.backends, "mps")
    assert not devices.get("mps").is_available()


# -- XPU (stand-in torch.xpu) ----------------------------------------------------------
def fake_xpu(monkeypatch: pytest.MonkeyPatch, count: int = 2) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    props = SimpleNamespace(name="Intel(R) Arc(TM) B580 Graphics", vendor="Intel(R) Corporation",
                            driver_version="1.6.33578", version="20.1.0", max_compute_units=160,
                            total_memory=12 * GIB)
    for name, value in (
        ("is_available", lambda: True), ("device_count", lambda: count),
        ("get_device_properties", lambda index: props),
        ("get_device_name", lambda index: f"{props.name} #{index}"),
        ("reset_peak_memory_stats", lambda d: calls.append(("reset", d))),
        ("max_memory_allocated", lambda d: 5 * 2**20),
        ("synchronize", lambda d: calls.append(("sync", d))),
    ):
        monkeypatch.setattr(torch.xpu, name, value)
    return calls


def test_xpu_is_found_and_described(monkeypatch):
    calls = fake_xpu(monkeypatch)
    assert available_devices()[-3:] == ["xpu", "xpu:0", "xpu:1"]
    xpu = devices.for_device("xpu:1")
    assert detect_class("xpu:1").name == "xpu" and xpu.device_count() == 2
    features = xpu.features("xpu:1")
    assert features == {"vendor": "intel(r) corporation",
                        "model_name": "Intel(R) Arc(TM) B580 Graphics", "driver": "1.6.33578",
                        "runtime": "20.1.0", "compute_units": 160, "memory_gib": 12.0, "env": {}}
    assert fingerprint("xpu:1", 1)["device_name"] == "Intel(R) Arc(TM) B580 Graphics #1"
    ident = Identity("xpu", features, {})
    assert "; driver 1.6.33578;" in ident.describe()
    assert format_identity(ident)[1] == (
        "conformance: xpu Intel(R) Arc(TM) B580 Graphics (intel(r) corporation) x160 12.0 GiB, "
        "driver 1.6.33578, runtime 20.1.0")
    xpu.reset_peak_memory("xpu:1")
    xpu.synchronize("xpu:1")
    assert xpu.peak_memory_bytes("xpu:1") == 5 * 2**20
    assert calls == [("reset", "xpu:1"), ("sync", "xpu:1")]


def test_a_torch_without_xpu(monkeypatch):
    monkeypatch.delattr(torch, "xpu")
    xpu = devices.get("xpu")
    assert not xpu.is_available() and xpu.available() == [] and xpu.device_count() == 0
    assert xpu.peak_memory_bytes("xpu") is None
    xpu.synchronize("xpu")  # nothing to wait for


def test_an_identity_of_an_unknown_class_has_no_feature_line():
    ident = Identity("gpu", {"model_name": "X"}, {})
    assert "(X; no flags;" in ident.describe()
    assert len(format_identity(ident)) == 1
    assert format_fingerprint({"hardware_class": "gpu", "device": "gpu", "threads": 1,
                               "deterministic": True, "python": "3", "torch": "2",
                               "diffusers": "1", "transformers": "1", "cuda": "12"})[-1] \
        .startswith("conformance: python")


# -- workers ---------------------------------------------------------------------------
def _config(workerid: str | None) -> Any:
    return SimpleNamespace(workerinput={"workerid": workerid} if workerid else None)


@pytest.mark.parametrize("device, workerid, expected", [
    ("cuda", "gw3", "cuda:1"), ("cuda:0", "gw3", "cuda:0"), ("cuda", None, "cuda"),
    ("xpu", "gw2", "xpu:0"), ("cpu", "gw3", "cpu"), ("mps", "gw1", "mps"),
])
def test_workers_spread_over_the_devices_of_their_kind(monkeypatch, device, workerid,
                                                       expected):
    from conformance.plugin import _worker_device

    FakeCuda(monkeypatch)
    fake_xpu(monkeypatch)
    assert _worker_device(device, _config(workerid)) == expected


def test_only_host_threads_get_the_openmp_policy():
    from conformance.plugin import worker_environment

    assert worker_environment("cpu", 2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    for device in ("cuda", "cuda:1", "mps", "xpu:0", "npu"):
        assert worker_environment(device, 2, 4) == {}


def test_device_help_lists_every_form():
    from conformance.options import OPTION_BY_NAME

    assert OPTION_BY_NAME["device"].help == ("device to generate on: cpu, cuda, cuda:N, mps, "
                                             "xpu, xpu:N (default: cpu)")


# -- the record hint of a missing golden ---------------------------------------------------
class _NoRunner:
    def peak_memory_mb(self) -> None:
        return None


@pytest.mark.parametrize("golden_class, hint", [
    ("cpu-intel-avx512+amx+bf16", " (a CPU with those features, under "
     "ATEN_CPU_CAPABILITY=avx512: ATEN_CPU_CAPABILITY=avx512 pytest --pyargs conformance "),
    ("cpu-avx2", ""), ("cuda-sm89", ""), ("mps", ""),
])
def test_a_missing_golden_names_the_variables_that_pin_its_class(tmp_path, golden_class, hint):
    from conformance.session import ConformanceSession, Settings

    session = ConformanceSession(Settings(golden_dir=tmp_path), HardwareClass("cpu-amd-avx2"),
                                 {}, runner=_NoRunner())
    item = next(iter(session.items()))
    reason = session._missing_reason(item, golden_class, own=False)
    assert reason.startswith(f"no golden for {item.id} in class {golden_class} "
                             f"({tmp_path / item.model / golden_class / 'manifest.json'})"
                             f"; it is recorded on a {golden_class} machine")
    if hint:
        assert hint in reason and "--record" in reason
    else:
        assert reason.endswith(f"{golden_class} machine")


def test_the_package_keeps_device_text_out_of_other_modules():
    """Device kinds are spelled in conformance/devices/ and the class grammar only: the
    modules that ask the registry compare no device type themselves."""
    root = Path(devices.__file__).parent.parent
    for name in ("generate.py", "plugin.py", "identity.py", "lookup.py", "hardware.py"):
        text = (root / name).read_text()
        for needle in ('startswith("cuda', '"cuda"', '"xpu"', 'startswith("cpu-', "torch.cuda",
                       "torch.xpu", "cudnn"):
            assert needle not in text, (name, needle)
