"""A whole training step captured as a CUDA graph and replayed: train_step (minillm/training/step.py:
forward, loss, backward, gradient clipping and the AdamW update) in one launch, for batches of one
fixed shape.

A MiniLM training step on the GPU is about a thousand kernel launches, each costing the host
microseconds of Python and CuPy; a replayed graph costs about a microsecond a kernel and no Python.
A graph fixes at capture what each launch reads and writes, so:

- Addresses. The step reads its batch from static device buffers, into which each call copies the
  next host batch. Every array the step makes comes from a private memory pool, at the address it
  had at capture; nothing else draws from that pool, and each block holds the pool alive, so no
  block the graph writes is ever handed to other code (the gradients outlive this object if the
  model does).
- Shapes. Every batch has the example batch's shapes: pad them (Trainer(cuda_graph=True) pads to
  the longest training text and fills the last batch with rows the loss ignores).
- Scalars. AdamW's learning rate and bias corrections change every step: AdamW(capturable=True)
  reads them from device memory, written before each replay (optimizer.prepare_replay()).
- The host. Nothing may wait for the GPU or copy between host and device inside a capture: the
  model's input checks skip there (minillm.cuda.is_capturing()), and each call first checks its
  host batch with the model's own checks (model.check_batch). Dropout draws its seed on the host,
  so a replay would repeat its masks forever: a model with dropout is refused. CuPy will not call
  cuBLAS while capturing, so products go through kernels/cuda/cublas.py then.

The first ``warmup`` calls run eagerly (they compile every kernel and create the optimizer's state
and scalar table: made inside a capture, those would be re-zeroed by every replay); the next call
captures the step and replays it; later calls copy the batch in and replay. Warm-up steps are
training steps like the rest: nothing is undone. NaN checks happen after a step (its loss is read
once it has run), so a diverged step has already updated the weights.

CuPy 14 calls relied on: Stream(non_blocking=True) (capture cannot use the legacy default stream),
Stream.begin_capture() (relaxed mode by default, so a memory pool may cudaMalloc during capture),
Stream.end_capture() -> cupy.cuda.Graph, Graph.launch(stream) (on any stream: here the caller's, so
copies in, replays and reads of the loss queue in order), cupy.cuda.using_allocator, MemoryPool,
MemoryPointer and UnownedMemory.
"""
import numpy

from .. import backend
from ..kernels.cuda import cublas
from ..nn import Dropout
from ..ops import IGNORE_INDEX
from ..tensor import Tensor
from .step import train_step


class CapturedStep:
    """step = CapturedStep(model, optimizer, example); loss, grad_norm = step(batch)

    model: a single-label classifier on a GPU, float32, with every dropout at 0 (check_capturable),
    that checks a host batch with ``model.check_batch(arrays)``. optimizer: AdamW(capturable=True)
    over its parameters. example: a batch whose shapes and dtypes every batch has: a dict of host
    arrays, the model's keyword arguments with integer "labels" (pad_batch's batches, grown to one
    shape by full_batch). params: what clip_grad_norm_ clips at max_grad_norm (default every
    parameter; 0: no clipping).

    Each call copies ``batch`` into the graph's buffers and runs train_step on them (forward, loss,
    backward, clipping, optimizer.step()). It returns (loss, grad_norm), 0-d float32 device arrays
    (grad_norm None without clipping) that the next call overwrites: read them before it. The graph
    updates the optimizer state it was captured with: after optimizer.load_state_dict() (new state
    arrays) build a new CapturedStep; the old one's next call is refused (by prepare_replay).
    """

    def __init__(self, model, optimizer, example, max_grad_norm=1.0, params=None, warmup=2):
        check_capturable(model)
        if not getattr(optimizer, "capturable", False):
            raise ValueError("CapturedStep: the optimizer must be AdamW(capturable=True), which reads its learning "
                             "rate and bias corrections from device memory that changes between replays")
        if not (isinstance(warmup, int) and warmup >= 1):
            raise ValueError(f"CapturedStep: warmup must be an integer >= 1, got {warmup!r}: the optimizer's state "
                             "must exist before a capture (made inside it, every replay would zero it again)")
        if "labels" not in example:
            raise ValueError("CapturedStep: the example batch has no 'labels' (the class ids the loss is taken on)")
        like = {key: numpy.asarray(value) for key, value in example.items()}
        if like["labels"].dtype.kind not in "iu":
            raise TypeError(f"CapturedStep: labels must be class ids (integers), got {like['labels'].dtype}")
        self.model, self.optimizer, self.max_grad_norm, self.warmup = model, optimizer, max_grad_norm, warmup
        self.params = list(model.parameters()) if params is None else list(params)
        self.device = next(iter(model.parameters())).device
        with backend.use_device(self.device):
            self.inputs = {key: backend.cupy.empty(a.shape, a.dtype) for key, a in like.items()}
        self.calls = 0  # steps run, eagerly or replayed
        self.graph = self.pool = self.outputs = None

    def __call__(self, batch):
        arrays = host_batch(batch, self.inputs, self.model)
        with backend.use_device(self.device):
            stream = backend.cupy.cuda.get_current_stream()
            for key, array in arrays.items():
                self.inputs[key].set(array, stream=stream)
            if self.calls < self.warmup:
                outputs = self._step()
                self.optimizer.zero_grad()
            else:
                if self.graph is None:
                    self._capture()
                self.optimizer.prepare_replay()
                self.graph.launch(stream)
                outputs = self.outputs
        self.calls += 1
        return outputs

    def _step(self):
        """train_step on the static buffers: what the graph captures."""
        return train_step(self.model, self.inputs, self.optimizer, self.max_grad_norm, self.params)

    def _capture(self):
        """Record one step into self.graph, on a side stream with the private pool. Nothing runs:
        the first replay does the step. The gradients the step leaves stay the graph's buffers."""
        cupy = backend.cupy
        cublas.prepare()  # a cuBLAS handle and workspace are made outside the capture
        self.optimizer.zero_grad()  # backward then writes fresh gradient arrays, not sums into old ones
        self.pool = cupy.cuda.MemoryPool()
        stream = cupy.cuda.Stream(non_blocking=True)
        with cupy.cuda.using_allocator(_holding(self.pool)), stream:
            stream.begin_capture()
            try:
                outputs = self._step()
            except BaseException as err:
                _abandon(stream)
                self.optimizer.zero_grad()
                if not isinstance(err, Exception):  # KeyboardInterrupt and the like: as they are
                    raise
                raise RuntimeError(f"capturing training step {self.calls + 1} as a CUDA graph failed: "
                                   f"{type(err).__name__}: {err} (none of the step ran: the weights are as they "
                                   "were)") from err
            self.graph = stream.end_capture()
        self.outputs = outputs


def check_capturable(model):
    """A ValueError unless a training step of ``model`` can be captured: a single-label classifier
    (``num_labels`` >= 2 and a config's ``problem_type`` None or "single_label_classification", as
    Hugging Face's classifiers have: the batches' filler rows need cross-entropy's ignore_index), no
    dropout (a replay would repeat the masks drawn at capture), float32 parameters (the CUDA
    kernels), on a GPU."""
    labels, problem = getattr(model, "num_labels", None), getattr(getattr(model, "config", None), "problem_type", None)
    if labels is None or labels < 2 or problem not in (None, "single_label_classification"):
        raise ValueError("CUDA-graph capture trains single-label classifiers (cross-entropy over class ids, whose "
                         "ignore_index the filler rows of a padded batch need); this model has "
                         f"num_labels={labels}, problem_type={problem}")
    dropping = [f"{name} (p={m.p})" for name, m in model.named_modules() if isinstance(m, Dropout) and m.p > 0]
    if dropping:
        raise ValueError("CUDA-graph capture needs a model without dropout: a captured step would replay the dropout "
                         f"masks drawn at capture in every step. Dropout here: {', '.join(dropping)}. Build the model "
                         "with every dropout probability 0 in its config (a BERT's: hidden_dropout_prob=0 and "
                         "attention_probs_dropout_prob=0, and classifier_dropout=0)")
    wrong = [f"{name} is {p.dtype}" for name, p in model.named_parameters() if p.dtype != numpy.float32]
    if wrong:
        raise ValueError(f"CUDA-graph capture needs float32 parameters (the CUDA kernels): {wrong[0]}")
    device = next(iter(model.parameters())).device
    if device.type != "cuda":
        raise ValueError(f"CUDA-graph capture needs the model on a GPU (model.to('cuda')); it is on {device}")


def host_batch(batch, like, model):
    """``batch`` as C-contiguous host arrays shaped and typed as the arrays of ``like`` (the graph's
    buffers), checked by ``model.check_batch`` as the model checks its inputs, which it cannot inside
    the graph: errors name the key, the expected and the actual shape or dtype."""
    arrays = {}
    for key, buffer in like.items():
        if key not in batch:
            raise ValueError(f"CapturedStep: the batch has no {key!r} (it needs {', '.join(like)})")
        value = batch[key].data if isinstance(batch[key], Tensor) else batch[key]
        if backend.on_device(value):
            raise TypeError(f"CapturedStep: batch[{key!r}] is on the GPU; pass host arrays (each call copies "
                            "them into the graph's buffers)")
        array = numpy.asarray(value)
        if array.shape != tuple(buffer.shape):
            raise ValueError(f"CapturedStep: batch[{key!r}] has shape {array.shape}, the captured step takes "
                             f"{tuple(buffer.shape)}: pad every batch to the example's shape")
        if not numpy.can_cast(array.dtype, buffer.dtype, casting="same_kind"):
            raise TypeError(f"CapturedStep: batch[{key!r}] is {array.dtype}, the captured step takes {buffer.dtype}")
        arrays[key] = numpy.ascontiguousarray(array, dtype=buffer.dtype)
    model.check_batch(arrays)
    return arrays


def full_batch(batch, rows, width, pad_token_id=0):
    """A pad_batch batch of B <= rows texts padded to L <= width, grown to (rows, width): columns of
    padding (mask 0), and rows the loss ignores (label IGNORE_INDEX, -100, cross-entropy's) that attend
    to their first token, so their logits are finite; the loss and its gradients are the batch's."""
    count, length = batch["input_ids"].shape
    if count > rows or length > width:
        raise ValueError(f"full_batch: a batch of {count} texts of {length} tokens does not fit ({rows}, {width})")
    out = {"input_ids": numpy.full((rows, width), pad_token_id, numpy.int64),
           "token_type_ids": numpy.zeros((rows, width), numpy.int64),
           "attention_mask": numpy.zeros((rows, width), numpy.int64),
           "labels": numpy.full(rows, IGNORE_INDEX, numpy.int64)}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        out[key][:count, :length] = batch[key]
    out["attention_mask"][count:, 0] = 1
    out["labels"][:count] = batch["labels"]
    return out


def _holding(pool):
    """An allocator drawing from ``pool`` whose every block keeps the pool alive: CuPy frees a pool's
    memory when the pool dies, even under arrays still using it (they hold it by a weak reference)."""
    cupy = backend.cupy

    def malloc(size):
        block = pool.malloc(size)
        return cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(block.ptr, size, (block, pool), block.device_id), 0)
    return malloc


def _abandon(stream):
    """End a capture that an error broke. CUDA then reports the capture invalidated, which the
    error that broke it explains better."""
    try:
        stream.end_capture()
    except Exception:  # noqa: BLE001 (cudaErrorStreamCaptureInvalidated: the original error is raised)
        pass
