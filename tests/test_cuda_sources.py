"""The CUDA sources (csrc/cuda/) on a machine without a GPU: each compiles with nvcc for sm_90 exactly
as NVRTC will get it, uses nothing NVRTC lacks, defines every kernel the wrappers launch (and no
kernel they don't), and each launch passes the arguments its kernel declares. Without nvcc these
tests skip: it is the toolchain a GPU machine has. tests/test_kernels_cuda.py runs the kernels."""
import pathlib
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

from minillm import backend
from minillm.kernels import cuda
from minillm.kernels.cuda import adamw, attention, gelu, layer_norm, softmax  # noqa: F401 (registers every Kernel)

SOURCES = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[1] / "csrc" / "cuda").glob("*.cu"))
NVRTC_MISSING = re.compile(r"#\s*include\s*<|\b(INFINITY|NAN|HUGE_VALF?|M_PI\w*|FLT_MAX|INT_MAX)\b")


@pytest.fixture(scope="module")
def ptx(tmp_path_factory):
    """source name -> the PTX nvcc makes of it for sm_90; a failed compile fails with nvcc's message."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed (the CUDA toolkit compiles csrc/cuda)")
    folder = tmp_path_factory.mktemp("ptx")
    results = {}
    for name in SOURCES:
        code = folder / f"{name}.cu"
        code.write_text(cuda.source(name))  # common.cuh pasted in, as NVRTC gets it
        out = folder / f"{name}.ptx"
        run = subprocess.run(["nvcc", "-arch=sm_90", "--ptx", "-std=c++17", "-Werror", "all-warnings",
                              "-o", str(out), str(code)], capture_output=True, text=True)
        assert run.returncode == 0, f"nvcc failed on csrc/cuda/{name}.cu:\n{run.stdout}{run.stderr}"
        results[name] = out.read_text()
    return results


def entries(ptx_text):
    """kernel name -> its parameters' PTX types (u64 for pointers and 64-bit integers, u32, f32, ...)."""
    return {m.group(1): re.findall(r"\.param \.(\w+)", m.group(2))
            for m in re.finditer(r"\.entry (\w+)\(\s*(.*?)\)", ptx_text, re.S)}


def without_comments(code):
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", code, flags=re.S))


def test_every_source_is_found_and_nvrtc_ready():
    assert set(SOURCES) == {"adamw", "attention", "gelu", "layer_norm", "softmax"}
    for name in SOURCES:
        code = without_comments(cuda.source(name))  # the .cu with common.cuh pasted in
        assert '#include "common.cuh"' not in code
        missing = NVRTC_MISSING.search(code)
        assert missing is None, f"{name}.cu uses a system header or a math.h macro NVRTC lacks: {missing.group()}"


def test_every_source_compiles_for_sm90(ptx):
    for name, text in ptx.items():
        assert ".target sm_90" in text and entries(text), name


def test_layer_norm_backward_rounds_dxhat_before_either_pass_reads_it(ptx):
    """dxhat = g w as __fmul_rn, a rounded product nvcc never fuses into an FMA (PTX mul.rn.f32): fused
    into the second pass's g w - mean(dxhat), it would not cancel against the dxhat the first pass
    summed (csrc/cuda/layer_norm.cu). tests/test_kernels_cuda.py checks the effect on a GPU."""
    backward = ptx["layer_norm"].split(".entry layer_norm_backward(")[1].split(".entry ")[0]
    assert "mul.rn.f32" in backward


def test_launched_kernels_exist_and_every_kernel_is_launched(ptx):
    launched = {(k.source, k.name) for k in cuda.Kernel.every}
    defined = {(name, kernel) for name, text in ptx.items() for kernel in entries(text)}
    assert launched - defined == set(), "launched but not defined in csrc/cuda"
    assert defined - launched == set(), "defined in csrc/cuda but never launched"


# ------------------------------------------------------------ launch arguments against the PTX

class HostArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: the wrappers run, nothing launches."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


class FakeCupy(types.ModuleType):
    """NumPy under CuPy's name, its arrays HostArray."""
    ndarray = HostArray

    def __init__(self):
        super().__init__("cupy")
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0))

    def __getattr__(self, name):
        value = getattr(np, name)
        if callable(value) and not isinstance(value, type):
            return lambda *a, **k: _device(value(*a, **k))
        return value


def _device(value):
    if isinstance(value, tuple):
        return tuple(_device(v) for v in value)
    return value.view(HostArray) if isinstance(value, np.ndarray) and not isinstance(value, HostArray) else value


PTX_TYPES = {np.float32: {"f32"}, np.int32: {"u32", "s32"}, np.int64: {"u64", "s64"}, np.uint64: {"u64"}}


@pytest.fixture
def launches(ptx, monkeypatch):
    """Every launch the wrappers make, checked against the PTX parameters of its kernel as CuPy packs
    arguments: arrays as 64-bit pointers, NumPy scalars by their type (a Python int or float would
    be packed as 64 bits / a double whatever the kernel declares)."""
    monkeypatch.setattr(backend, "cupy", FakeCupy())
    made = []

    def launch(kernel, grid, block, *args):
        params = entries(ptx[kernel.source])[kernel.name]
        assert len(args) == len(params), f"{kernel.name}: {len(args)} arguments for {len(params)} parameters"
        for i, (arg, param) in enumerate(zip(args, params)):
            if isinstance(arg, HostArray):
                assert param == "u64", f"{kernel.name} argument {i}: an array for a .{param} parameter"
            else:
                assert type(arg) in PTX_TYPES and param in PTX_TYPES[type(arg)], \
                    f"{kernel.name} argument {i}: {type(arg).__name__} {arg!r} for a .{param} parameter"
        assert all(0 < n < 2**31 for n in grid) and 0 < np.prod(block) <= 1024, (kernel.name, grid, block)
        made.append(kernel.name)

    monkeypatch.setattr(cuda.Kernel, "__call__", launch)
    return made


def device(shape, dtype=np.float32):
    return np.random.default_rng(0).normal(size=shape).astype(dtype).view(HostArray)


def test_row_kernels_pass_their_declared_arguments(launches):
    x, w = device((5, 12)), device((12,))
    softmax.softmax_forward(x, device((1, 12)))
    softmax.softmax_forward(x)
    softmax.softmax_backward(x, x)
    y, mean, rstd = layer_norm.layer_norm_forward(x, w, w, 1e-12)
    layer_norm.layer_norm_forward(x, None, None, 1e-5)
    layer_norm.layer_norm_backward(x, x, w, mean, rstd)
    layer_norm.layer_norm_backward(x, x, None, mean, rstd)
    for approximate in ("none", "tanh"):
        gelu.gelu_forward(x, approximate, w)
        gelu.gelu_backward(x, x, approximate)
    p, g, m, v = (device((7,)) for _ in range(4))
    adamw.adamw_step(p, g, m, v, 0.99, 0.9, 0.999, 1e-3, 0.5, 1e-8)
    adamw.adamw_step_scalars(p, g, m, v, device((adamw.SCALARS,)))
    assert set(launches) == {k.name for k in cuda.Kernel.every if k.source != "attention"}


def test_attention_kernels_pass_their_declared_arguments(launches):
    for d in (8, 64, 100):
        q = device((2, 3, 70, d)).transpose(0, 2, 1, 3)  # (2, 70, 3, d) as (B=2, H=70, L=3, d): odd strides
        k = device((2, 70, 5, d))
        mask = (device((2, 5)) > 0).view(HostArray)
        out, lse = attention.attention_forward(q, k, k, mask, device((3, 5)), None, 0.1, 7)
        attention.attention_backward(q, k, k, out, lse, q, mask, None, 0.5, 0.1, 7)
        attention.attention_forward(q, k, k)
    assert set(launches) == {k.name for k in cuda.Kernel.every if k.source == "attention"}


def test_dispatch_sends_float32_device_arrays_to_the_cuda_kernels(launches):
    from minillm import kernels

    x = device((3, 4))
    with kernels.use("compiled"):
        kernels.softmax_forward(x)
        kernels.gelu_backward(x, x)
        kernels.softmax_forward(x.astype(np.float64))  # float64 runs the NumPy twin on the device
        with kernels.use("numpy"):
            kernels.softmax_forward(x)
        kernels.softmax_forward(np.asarray(x))  # a host array: the Cython twin
    assert launches == ["softmax_forward", "gelu_backward"]
