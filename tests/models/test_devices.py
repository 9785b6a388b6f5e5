"""Devices, precision and CPU threads: the choice, the one-line errors, and what each changes.

No GPU is available where these run: the GPU branches are exercised through torch.cuda's
answers (monkeypatched), and the missing-device errors are what this machine really gives.
"""

from __future__ import annotations

import os

import pytest
import torch

from headscope.capture import Needs, capture
from headscope.models import devices
from headscope.models.devices import (
    DeviceError,
    check_threads,
    choose_threads,
    resolve_device,
    resolve_dtype,
    torch_threads,
)
from headscope.models.loading import load_model
from headscope.scores.ov import OVOptions
from headscope.scores.ov_kernel import ov_ranks
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.conftest import save_tiny_gpt2
from tests.numerics import assert_float_close, check_ov_ranks, ov_inputs

NO_GPU = not torch.cuda.is_available()
ALL_NEEDS = Needs(resid0_keywords=True, pattern_end=True, z_end=True, mlp_end=True, scale_end=True)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


# ---- devices ---------------------------------------------------------------------------------


def test_auto_is_the_cpu_without_a_gpu(no_accelerator):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


def test_auto_is_the_first_gpu_and_cuda_n_picks_one(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_a_gpu_index_past_the_last_names_the_ones_there_are(two_gpus):
    with pytest.raises(DeviceError) as error:
        resolve_device("cuda:7")
    assert (
        one_line(error)
        == "device='cuda:7': this machine has 2 CUDA GPUs (cuda:0 to cuda:1); pick one of those"
    )


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_on_a_machine_without_one_is_one_line(name):
    with pytest.raises(DeviceError) as error:
        resolve_device(name)
    message = one_line(error)
    assert message.startswith(f"device={name!r}: ") and "use --device cpu" in message


def test_mps_without_an_apple_gpu_is_one_line(no_accelerator):
    with pytest.raises(DeviceError) as error:
        resolve_device("mps")
    assert "no Apple GPU" in one_line(error)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "tpu", ""])
def test_a_bad_device_name_lists_the_good_ones(name):
    with pytest.raises(DeviceError) as error:
        resolve_device(name)
    assert one_line(error) == f"device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"


# ---- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype"), [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]
)
def test_each_precision_runs_on_the_cpu(name, dtype):
    assert resolve_dtype(name, torch.device("cpu")) is dtype


def test_a_bad_precision_lists_the_good_ones():
    with pytest.raises(DeviceError) as error:
        resolve_dtype("float8", torch.device("cpu"))
    assert one_line(error) == "dtype='float8' is not a precision; use float32, bfloat16, float16"


def test_a_precision_the_device_cannot_compute_in_is_one_line(monkeypatch):
    real = torch.nn.functional.layer_norm

    def layer_norm(x, *args, **kwargs):
        if x.dtype == torch.float16:
            raise RuntimeError("\"LayerNormKernelImpl\" not implemented for 'Half'\n(a second line)")
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "layer_norm", layer_norm)
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(DeviceError) as error:
        resolve_dtype("float16", torch.device("cpu"))
    message = one_line(error)
    assert message.startswith("dtype='float16': cpu cannot compute in float16 (")
    assert "not implemented for 'Half'" in message and message.endswith("use --dtype float32")


def test_load_model_refuses_a_missing_device_before_reading_weights(monkeypatch):
    monkeypatch.setattr("headscope.models.loading.resolve", lambda spec: pytest.fail("weights were read"))
    with pytest.raises(DeviceError):
        load_model("organism", device="cuda:7" if NO_GPU else "tpu")


# ---- a half-precision model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def organism_pair():
    return load_model("organism", device="cpu"), load_model("organism", device="cpu", dtype="bfloat16")


def test_bfloat16_weights_are_the_float32_ones_rounded(organism_pair):
    full, half = organism_pair
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert {p.dtype for p in half.bridge.parameters()} == {torch.bfloat16}
    for name in ("W_V", "W_O", "W_U", "ln1_w"):
        ours = getattr(half.weights, name)
        assert ours.dtype == torch.float32  # scores read float32 whatever the model's precision
        assert torch.equal(ours, getattr(full.weights, name).to(torch.bfloat16).float()), name


def test_bfloat16_captures_are_float32_and_near_the_float32_run(organism_pair):
    full, half = organism_pair
    dataset = build_dataset(get_task("ioi"), full.tokens, 16, 0)
    a, b = capture(full, dataset, ALL_NEEDS), capture(half, dataset, ALL_NEEDS)
    for name in ("logits_end", "pattern_end", "z_end", "mlp_end", "resid0_keywords"):
        x, y = getattr(a, name), getattr(b, name)
        assert y.dtype == torch.float32, name
        assert not torch.equal(x, y), f"{name}: the bfloat16 run gave float32's exact numbers"
        scale = float(x.abs().max())
        assert float((x - y).abs().max()) < 0.05 * scale, name  # bfloat16 keeps ~3 significant digits
    rows = torch.arange(dataset.n)  # bfloat16's argmax is float32's except at a near-tie of logits
    margin = 0.1 * float(a.logits_end.abs().max())
    assert bool((a.logits_end[rows, b.logits_end.argmax(-1)] >= a.logits_end.amax(-1) - margin).all())


# ---- threads ---------------------------------------------------------------------------------


def test_threads_are_chosen_by_width_device_and_idle_cores(monkeypatch):
    monkeypatch.setattr(devices, "idle_cores", lambda: 3)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_threads(192, cpu) == 1  # the organism
    assert choose_threads(devices.THREADED_WIDTH - 1, cpu) == 1
    assert choose_threads(devices.THREADED_WIDTH, cpu) == 3
    assert choose_threads(4096, gpu) == 1


def test_idle_cores_are_the_idle_share_of_the_cores_this_process_may_use(monkeypatch):
    busy = [100.0, 30.0, 80.0, 0.0, 100.0, 100.0]
    monkeypatch.setattr(devices.psutil, "cpu_percent", lambda interval, percpu: busy)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert devices.usable_cores() == 4
    assert devices.idle_cores() == 2  # 0.0 + 0.7 + 0.2 + 1.0 idle cores
    busy[:] = [100.0] * 6
    assert devices.idle_cores() == 1  # at least one


def test_cores_without_an_affinity_call_are_every_core(monkeypatch):
    """macOS and Windows have no sched_getaffinity: every core counts."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    monkeypatch.setattr(devices.psutil, "cpu_percent", lambda interval, percpu: [0.0, 50.0, 100.0])
    assert devices.usable_cores() == 3
    assert devices.idle_cores() == 2  # 1.5 idle, rounded


def test_threads_outside_the_cores_are_one_line():
    cores = os.cpu_count()
    assert check_threads(None) is None and check_threads(1) == 1
    for bad in (0, cores + 1):
        with pytest.raises(DeviceError) as error:
            check_threads(bad)
        assert one_line(error) == f"threads={bad}: give 1 to {cores} (this machine's cores), or leave it out"


def test_load_model_sets_the_thread_count():
    before = torch.get_num_threads()
    try:
        load_model("organism", device="cpu", threads=os.cpu_count())
        assert torch.get_num_threads() == os.cpu_count()
        load_model("organism", device="cpu")  # chosen: d_model 192 is below THREADED_WIDTH
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory, vocabulary):
    """A random GPT-2 of d_model 768: its MLP's output projection (3072 -> 768) on a short batch is
    a product MKL splits along the sum among threads unless told not to (MKL_CBWR)."""
    directory = save_tiny_gpt2(tmp_path_factory.mktemp("wide"), vocabulary, n_layer=1, n_head=12, n_embd=768)
    return load_model(str(directory), device="cpu")


def _ov_ranks_of(model, dataset, taken, options: OVOptions):
    """The OV kernel's ranks for the capture's own context vectors (what ov_scores computes)."""
    vectors, targets, heads = ov_inputs(model, dataset, options.relations, "context", taken)
    return vectors, targets, heads, ov_ranks(model.weights, vectors, targets, heads, options.k, options.signs)


@pytest.mark.parametrize("which", ["organism", "wide"])
def test_numbers_do_not_depend_on_the_thread_count_beyond_float_rounding(which, organism_pair, wide_model):
    """Another thread count may split a product's sum differently (MKL honours a fixed order on some
    processors only): floats agree within float32 rounding of the longest sums on their path, ranks
    and top-k lists exactly except at float ties (counted in a warning)."""
    model = organism_pair[0] if which == "organism" else wide_model
    dataset = build_dataset(get_task("seq-digits"), model.tokens, 67, 0)  # a last batch of 3 prompts
    options = OVOptions(("copy", "next"), 5, "context", True)
    runs = []
    for threads in (1, os.cpu_count()):
        with torch_threads(threads):
            taken = capture(model, dataset, ALL_NEEDS)
            runs.append((taken, _ov_ranks_of(model, dataset, taken, options)))
    (a, _), (b, _) = runs
    d_mlp = model.bridge.cfg.d_mlp or 4 * model.weights.d_model
    chain = model.n_layers * (3 * model.weights.d_model + d_mlp)  # every sum on a residual's path
    for name in ("logits_end", "pattern_end", "z_end", "mlp_end", "scale_end", "resid0_keywords"):
        assert_float_close(getattr(b, name), getattr(a, name), chain, name)
    for _, (vectors, targets, heads, ranks) in runs:
        check_ov_ranks(model.weights, vectors, targets, heads, options.signs, ranks, chain, which)
