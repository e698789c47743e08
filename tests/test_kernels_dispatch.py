"""The kernel dispatcher (minillm/kernels/dispatch.py): one input check in front of all three twins.

Each kernel gets the same bad inputs in compiled mode and in numpy mode (and, with a GPU, on CuPy
arrays) and must raise the same TypeError or ValueError, naming the argument, whichever twin would
have run; and the kernel modules import only downwards, never from minillm/kernels/__init__.py."""
import ast
import pathlib
import re

import numpy as np
import pytest

from minillm import kernels
from minillm.kernels import dispatch
from minillm.optim.adamw import update as adamw_update_kernel

KERNELS = pathlib.Path(kernels.__file__).parent
f32, f64 = np.ones((2, 3), np.float32), np.ones((2, 3))
q, k = np.ones((2, 3, 4, 5), np.float32), np.ones((2, 3, 6, 5), np.float32)
out, lse = np.ones((2, 3, 4, 5), np.float32), np.zeros((2, 3, 4), np.float32)
adamw = dict(decay=1.0, beta1=0.9, beta2=0.999, step_size=1e-3, bias_correction2_sqrt=1.0, eps=1e-8)
CASES = [  # (kernel, arguments, error, what the message names)
    (kernels.softmax_forward, (np.ones((2, 3), np.int64),), TypeError, "input must be float32 or float64"),
    (kernels.softmax_forward, (np.float32(1),), ValueError, "at least one dimension"),
    (kernels.softmax_forward, (f32, f64), TypeError, "mask dtype"),
    (kernels.softmax_forward, (f32, np.zeros((4, 3), np.float32)), ValueError, r"mask of shape \(4, 3\)"),
    (kernels.softmax_backward, (f32, np.ones((3, 2), np.float32)), ValueError, "grad"),
    (kernels.layer_norm_forward, (f32, np.ones(2, np.float32), None, 1e-5), ValueError, "weight must have shape"),
    (kernels.layer_norm_forward, (f32, None, np.ones(3), 1e-5), TypeError, "bias dtype"),
    (kernels.layer_norm_forward, (np.ones((2, 3, 4)), None, None, 1e-5), ValueError, "x must be"),
    (kernels.layer_norm_forward, (f64, None, None, -1.0), ValueError, "eps"),
    (kernels.layer_norm_backward, (f64, f64, None, np.ones(3), np.ones(2)), ValueError, "mean must have shape"),
    (kernels.add_layer_norm_forward, (f32, f32.T, None, None, 1e-5), ValueError, r"residual must have shape \(2, 3\)"),
    (kernels.add_layer_norm_forward, (f32, f64, None, None, 1e-5), TypeError, "residual dtype"),
    (kernels.gelu_forward, (f32, "erf"), ValueError, "approximate"),
    (kernels.gelu_forward, (np.ones(3, np.float16),), TypeError, "input must be float32"),
    (kernels.gelu_backward, (f32, f64), ValueError, "grad"),
    (kernels.matmul, (f32, f32), ValueError, "inner dimensions"),
    (kernels.matmul, (f32, f64.T), TypeError, "same dtype"),
    (kernels.matmul, (np.ones(3), np.ones((3, 2))), ValueError, "at least 2 dimensions"),
    (kernels.matmul, (np.ones((2, 3, 3)), np.ones((4, 3, 3))), ValueError, "batch dimensions"),
    (kernels.matmul, (f32, f32.T, False, False, np.ones(3, np.float32)), ValueError, r"bias must have shape \(2,\)"),
    (kernels.matmul, (f32, f32.T, False, False, np.ones(2)), TypeError, "bias must have the dtype"),
    (kernels.attention_forward, (q, k.astype(np.float64), k), TypeError, "k dtype"),
    (kernels.attention_forward, (q[0], k, k), ValueError, "q must be"),
    (kernels.attention_forward, (q, k, k[:, :, :5]), ValueError, "do not fit"),
    (kernels.attention_forward, (q, k, k, np.ones((2, 4), bool)), ValueError, r"key_mask must have shape \(B, S\)"),
    (kernels.attention_forward, (q, k, k, np.ones((2, 6), np.float32)), TypeError, "key_mask must be bool"),
    (kernels.attention_forward, (q, k, k, None, np.zeros((6, 4), np.float32)), ValueError, "bias must have shape"),
    (kernels.attention_forward, (q, k, k, None, None, None, 1.5), ValueError, "dropout probability"),
    (kernels.attention_backward, (q, k, k, out, lse[..., :2], out), ValueError, "lse must be"),
    (kernels.attention_backward, (q, k, k, out, lse, out.astype(np.float64)), ValueError, "grad must be"),
    (adamw_update_kernel, (f32, np.ones((3, 2), np.float32), f32.copy(), f32.copy()), ValueError, "grad is float32"),
    (adamw_update_kernel, (f32, f32, f64, f32.copy()), ValueError, "exp_avg is float64"),
    (adamw_update_kernel, (f32[:, ::2], f32[:, ::2], f32[:, :2].copy(), f32[:, :2].copy()), ValueError,
     "param must be a writable C-contiguous"),
]


def error_in(mode, kernel, args, xp):
    args = tuple(xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
    kwargs = adamw if kernel is adamw_update_kernel else {}
    with kernels.use(mode), pytest.raises((TypeError, ValueError)) as caught:
        kernel(*args, **kwargs)
    return type(caught.value), str(caught.value)


def case_id(case):
    return f"{case[0].__name__}-{case[3]}"


def check_case(case, xp):
    kernel, args, error, match = case
    compiled, numpy_mode = error_in("compiled", kernel, args, xp), error_in("numpy", kernel, args, xp)
    assert compiled == numpy_mode
    assert compiled[0] is error and re.search(match, compiled[1]), compiled


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_inputs_give_the_same_named_error_in_both_modes(case):
    check_case(case, np)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_inputs_give_the_same_named_error_on_the_gpu(cupy, case):
    check_case(case, cupy)


def test_mixed_places_name_the_argument(monkeypatch):
    """An array on the GPU beside host arrays: a TypeError naming it, before any twin runs."""
    class OnDevice(np.ndarray):
        pass

    monkeypatch.setattr(dispatch.backend, "on_device", lambda a: isinstance(a, OnDevice))
    for mode in dispatch.MODES:
        with kernels.use(mode), pytest.raises(TypeError, match="softmax: mask is a GPU array"):
            kernels.softmax_forward(f32, np.zeros(3, np.float32).view(OnDevice))
        with kernels.use(mode), pytest.raises(TypeError, match="weight is a host array"):
            kernels.layer_norm_forward(f32.view(OnDevice), np.ones(3, np.float32), None, 1e-5)


def test_the_compiled_twin_runs_only_in_compiled_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels.gelu_forward, "_compiled", lambda compiled, *args: calls.append(args) or f32)
    with kernels.use("compiled"):
        kernels.gelu_forward(f32)
    with kernels.use("numpy"):
        np.testing.assert_allclose(kernels.gelu_forward(f32), kernels.gelu_forward.numpy(f32, "none"))
    assert len(calls) == 1 and calls[0][1] == "none"  # the check filled in the default


def test_kernel_modules_import_only_from_below():
    """No kernel module imports a name from minillm/kernels/__init__.py, which imports them all: only
    its sibling modules (dispatch.py, blas.py, ...) and, lazily by name, the CUDA twins."""
    siblings = {p.stem for p in KERNELS.glob("*.py")} | {"cuda"}
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
                names = {alias.name for alias in node.names}
                assert names <= siblings, f"kernels/{path.name} imports {names - siblings} from kernels/__init__.py"
