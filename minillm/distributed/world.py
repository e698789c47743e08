"""The MPI world: this process's rank and the number of ranks, from the launcher's environment.

Under ``mpirun``/``mpiexec`` (MPICH's Hydra and Open MPI) or Slurm's ``srun --mpi=pmix`` the
launcher sets PMI_* / OMPI_COMM_WORLD_* / PMIX_* variables: then mpi4py is imported (the
``distributed`` extra) and COMM_WORLD is the world. Without a launcher the world is this one
process (rank 0 of 1) and mpi4py is never imported, so minillm needs no MPI to run.

With more than one rank an uncaught exception on any rank prints its traceback headed by the
rank and calls MPI_Abort, which ends every rank: the others stop instead of waiting forever in
their next collective.
"""
import os
import sys
import traceback

import numpy

LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
_world = None


class World:
    """rank, size and the collectives the trainer needs; comm None for the 1-process world."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    def average(self, values):
        """The mean over ranks of a list of floats (blocking Allreduce; itself with one rank)."""
        if self.comm is None:
            return list(values)
        from mpi4py import MPI

        buffer = numpy.asarray(values, dtype=numpy.float64)
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        return (buffer / self.size).tolist()

    def iallreduce(self, buffer):
        """Start summing ``buffer`` (a flat host array) over the ranks in place; the request to
        Wait() on (None with one rank: the sum is the buffer)."""
        if self.comm is None:
            return None
        from mpi4py import MPI

        return self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

    def gather(self, value):
        """Every rank's ``value`` (a picklable object) as a list on rank 0, None on the others."""
        return [value] if self.comm is None else self.comm.gather(value, root=0)

    def allgather(self, value):
        return [value] if self.comm is None else self.comm.allgather(value)

    def abort(self, code):
        """End every rank's process (MPI_Abort) when there are others; nothing with one rank."""
        if self.size > 1:
            sys.stderr.flush()
            self.comm.Abort(code)

    def barrier(self):
        if self.comm is not None:
            self.comm.Barrier()


def launched():
    """The launcher variable that says this process is one of an MPI job, or None."""
    return next((name for name in LAUNCHER_VARIABLES if name in os.environ), None)


def world():
    """The World of this process (made once): COMM_WORLD under an MPI launcher, else 1 process."""
    global _world
    if _world is None:
        variable = launched()
        if variable is None:
            _world = World()
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                raise RuntimeError(f"minillm.distributed: started by an MPI launcher ({variable} is set) but "
                                   "mpi4py is not installed: pip install -e '.[distributed]'") from None
            _world = World(MPI.COMM_WORLD)
            if _world.size > 1:
                _abort_on_exception(_world)
    return _world


def _abort_on_exception(w):
    """sys.excepthook: the traceback headed 'rank r of n', then MPI_Abort (every rank stops)."""
    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"minillm.distributed: rank {w.rank} of {w.size} failed, aborting every rank:\n{text}")
        sys.stderr.flush()
        w.comm.Abort(1)

    sys.excepthook = hook
