"""Kernels: the hot loops of a transformer, each written three times behind one dispatcher.

Every kernel file here holds a plain NumPy twin (the readable definition) first, then its input
check and the adapter of its compiled twin (Cython, csrc/<name>.pyx, built as ``minillm._C.<name>``);
the CUDA twins (csrc/cuda/) are launched by minillm/kernels/cuda/. dispatch.py holds the mode
(``MINILLM_KERNELS``, ``use("numpy")``), runs each kernel's check in front of all three twins and
chooses one; blas.py says how the compiled ones share the cores with BLAS's threads; allocator.py why freed
buffers stay in the process. This module re-exports, and sets malloc's thresholds once.
"""
from . import allocator, blas, dropout  # noqa: F401
from .adamw import adamw_step  # noqa: F401
from .attention import attention_backward, attention_forward  # noqa: F401
from .attention_varlen import attention_varlen_backward, attention_varlen_forward  # noqa: F401
from .dispatch import MODES, gpu, info, load, mode, set_threads, threads, use  # noqa: F401
from .dropout import apply_dropout, keep_mask  # noqa: F401
from .gelu import gelu_backward, gelu_forward  # noqa: F401
from .layer_norm import add_layer_norm_forward, layer_norm_backward, layer_norm_forward  # noqa: F401
from .matmul import matmul  # noqa: F401
from .softmax import logsumexp, softmax_backward, softmax_forward, stable_softmax  # noqa: F401

allocator.keep_freed_buffers()  # once per process: a step's big buffers are reused, not faulted in again
blas.thread_defaults()  # before scipy's BLAS loads: its idle threads sleep at once (blas.py)
