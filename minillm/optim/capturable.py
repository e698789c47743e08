"""AdamW's half for CUDA graphs: per-step scalars read from a device table, so a replay can use them.

A graph replays every launch with the arguments it was captured with, so an update whose learning
rate and bias corrections change each step cannot take them as arguments. With
AdamW(capturable=True) on float32 GPU parameters the update reads them instead from a device table,
one kernels.adamw.scalar_row per parameter, that the host fills: step() itself, one copy per step,
except while a graph is captured; then it records which parameters it updated, and prepare_replay()
counts their step and fills their rows before each replay. The numbers are capturable=False's.
"""
import numpy

from .. import backend, cuda
from ..kernels.adamw import adamw_step_scalars, scalar_row
from ..kernels.cuda.adamw import SCALARS


class CapturableSteps:
    """The capture bookkeeping AdamW mixes in: ``_table`` (parameters, 7) float32 on the GPU, row i
    parameter i's scalar_row; ``_captured``, the updates a captured step() launched. The optimizer
    provides ``_state(p)`` and ``_scalars(group, t)``, adamw_step's scalars at step t."""

    _table = None
    _captured = None

    def prepare_replay(self):
        """Before each replay of a graph that captured step(): count a step for every parameter it
        updates and write their scalars into the device table (one copy, on the current stream)."""
        if self._captured is None:
            raise RuntimeError(f"{type(self).__name__}.prepare_replay(): no step() was captured since the "
                               "optimizer was built or loaded (capture one with AdamW(capturable=True) on the GPU)")
        self._advance(self._captured)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._captured = None  # new state arrays: a graph captured before updates the old ones

    def _step_from_table(self, updates):
        """step() on the GPU: ``updates`` are (row, group, parameter) of the parameters with a gradient."""
        if cuda.is_capturing():
            if self._table is None or any(p not in self.state for _, _, p in updates):
                raise RuntimeError("AdamW: a step can be captured only after an eager one, which creates the state "
                                   "and the device table (created inside the capture, each replay would zero them)")
            self._captured = updates
        else:
            self._advance(updates)
        for row, _, p in updates:
            state = self.state[p]
            adamw_step_scalars(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], self._table[row])

    def _advance(self, updates):
        """Count a step for each update and write its scalar_row into the device table: one host to
        device copy on the current stream, queued after the launches that read the previous rows."""
        rows = numpy.zeros((sum(len(g["params"]) for g in self.param_groups), SCALARS), numpy.float32)
        for row, group, p in updates:
            state = self._state(p)
            state["step"] += 1
            rows[row] = scalar_row(**self._scalars(group, state["step"]))
        device = updates[0][2].data.device
        with device:
            if self._table is None:
                self._table = backend.cupy.asarray(rows)
            else:
                self._table.set(rows, stream=backend.cupy.cuda.get_current_stream())
