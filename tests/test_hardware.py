"""`--precision auto` (ganforge/hardware.py): bf16 only where the device multiplies it fast, found by the processor's
flags, torch's own check and a cached probe; the choice and its reason in config.json and on the console."""

import json
import shutil

import pytest
import torch
from conftest import tiny_config

from ganforge import hardware, train
from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError
from ganforge.hardware import choose_precision

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _unforced(monkeypatch):
    """The choice itself, not the suite's GANFORGE_AUTO_PRECISION=fp32 (tests/conftest.py)."""
    monkeypatch.delenv(hardware.FORCE_VARIABLE, raising=False)


def fake_cpu(monkeypatch, flags, onednn=True, name="Test CPU"):
    monkeypatch.setattr(hardware, "cpu", lambda: {"model_name": name, "flags": flags, "logical_cpus": 2,
                                                  "machine": "x86_64", "torch_cpu_capability": "AVX512",
                                                  "onednn_bf16": onednn})


def fake_rates(monkeypatch, fp32, bf16, calls):
    def rate(dtype, *args, **kwargs):
        calls.append(dtype)
        return fp32 if dtype == torch.float32 else bf16
    monkeypatch.setattr(hardware, "matmul_rate", rate)


def test_this_cpu_gets_a_choice_that_follows_its_flags():
    info = hardware.cpu()
    assert info["model_name"] and set(info["flags"]) <= set(hardware.FLAGS)
    precision, why = choose_precision(CPU)
    fast = any(f in info["flags"] for f in hardware.FAST_BF16_FLAGS) and info["onednn_bf16"]
    assert precision in ("bf16", "fp32") and why
    if not fast:  # e.g. AVX2 alone: bf16 is emulated there, and never chosen
        assert precision == "fp32" and "neither AMX nor AVX-512 BF16" in why
    else:  # AMX or AVX-512 BF16: the choice follows the measured (and cached) speed-up, and says it
        speedup = hardware.bf16_probe(info)["speedup"]
        assert precision == ("bf16" if speedup >= hardware.MIN_SPEEDUP else "fp32") and f"{speedup}x" in why


def test_a_cpu_with_amx_trains_in_bf16_when_the_probe_confirms_it_and_the_probe_is_cached(monkeypatch):
    fake_cpu(monkeypatch, ["avx512f", "amx_bf16", "amx_tile"])
    calls = []
    fake_rates(monkeypatch, 300.0, 2100.0, calls)
    precision, why = choose_precision(CPU)
    assert precision == "bf16" and "7.0x" in why and "amx_bf16" in why and len(calls) == 2
    assert choose_precision(CPU) == (precision, why) and len(calls) == 2  # read from the cache, not measured again
    fake_cpu(monkeypatch, ["avx512f", "amx_bf16"], name="Another CPU")  # another machine: measured anew
    choose_precision(CPU)
    assert len(calls) == 4


def test_bf16_that_is_not_measured_faster_or_not_in_hardware_stays_fp32(monkeypatch):
    fake_cpu(monkeypatch, ["avx512f", "avx512_bf16"], name="Slow bf16 CPU")
    fake_rates(monkeypatch, 300.0, 330.0, [])
    precision, why = choose_precision(CPU)
    assert precision == "fp32" and "only 1.1x" in why
    fake_cpu(monkeypatch, ["avx2"])
    assert choose_precision(CPU)[0] == "fp32"
    fake_cpu(monkeypatch, ["amx_bf16"], onednn=False)  # the flag, but torch's oneDNN cannot use it
    assert choose_precision(CPU)[0] == "fp32"


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_on_cuda_auto_follows_the_devices_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    precision, why = choose_precision(torch.device("cuda"))
    assert precision == expected and "Test GPU" in why


def test_auto_is_the_default_and_the_environment_can_make_its_choice(monkeypatch, tmp_path, capfd):
    assert TrainConfig().precision == "auto"
    monkeypatch.setenv(hardware.FORCE_VARIABLE, "bf16")
    assert choose_precision(CPU) == ("bf16", "GANFORGE_AUTO_PRECISION=bf16 in the environment")
    run = train(tiny_config(steps=2), runs_dir=tmp_path, progress=False)
    assert json.loads((run / "config.json").read_text())["chosen"]["precision"] == "bf16"
    assert "precision auto: bf16 (GANFORGE_AUTO_PRECISION=bf16" in capfd.readouterr().err
    monkeypatch.setenv(hardware.FORCE_VARIABLE, "fp8")
    with pytest.raises(GanforgeError, match="GANFORGE_AUTO_PRECISION='fp8': expected fp32 or bf16"):
        choose_precision(CPU)


def test_a_run_records_what_auto_chose_and_why(tmp_path, capfd):
    run = train(tiny_config(steps=2), runs_dir=tmp_path, progress=False)
    saved = json.loads((run / "config.json").read_text())
    precision, why = choose_precision(CPU)
    assert saved["precision"] == "auto" and saved["chosen"] == {"precision": precision, "why": why,
                                                                 "from_data": ["ada", "channels", "image_size"]}
    assert f"precision auto: {precision} ({why})" in capfd.readouterr().err
    shutil.rmtree(run / "checkpoints")  # as if stopped before its first checkpoint: it starts again from its config
    assert train(resume=run, progress=False) == run
