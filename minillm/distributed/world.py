"""The MPI world: this process's rank and the number of ranks, from the launcher's environment.

Under ``mpirun``/``mpiexec`` (MPICH's Hydra and Open MPI) or Slurm's ``srun --mpi=pmix`` the
launcher sets PMI_* / OMPI_COMM_WORLD_* / PMIX_* variables: then mpi4py is imported (the
``distributed`` extra) and COMM_WORLD is the world. Without a launcher the world is this one
process (rank 0 of 1) and mpi4py is never imported, so minillm needs no MPI to run.

With more than one rank an uncaught exception on any rank prints its traceback headed by the
rank and calls MPI_Abort, which ends every rank: the others stop instead of waiting forever in
their next collective. A rank that is killed is reported by the launcher (MPICH's Hydra names its
PID, and every rank says its PID when the world starts); one that stops answering (stuck, stopped,
on a dead machine) is caught by a watchdog: every collective is started non-blocking and waited
for at most ``timeout`` seconds (MINILLM_COLLECTIVE_TIMEOUT, 1800 by default, torch's default),
then the waiting rank says what it waited in and aborts every rank. torch's NCCL watchdog does the
same; MPI itself would wait forever.
"""
import os
import socket
import sys
import time
import traceback

import numpy

LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
TIMEOUT_VARIABLE = "MINILLM_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0  # seconds, as torch.distributed's default process-group timeout
_world = None


def collective_timeout():
    """Seconds a rank waits in one collective before it gives the others up (MINILLM_COLLECTIVE_TIMEOUT)."""
    value = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE}={value!r}: expected a number of seconds > 0")
    return seconds


class World:
    """rank, size and the collectives the trainer needs; comm None for the 1-process world.
    Each collective is waited for at most ``timeout`` seconds (see the module's docstring)."""

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        self.comm, self.timeout = comm, timeout
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
        self.wait(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), "an allreduce of metrics")
        return (buffer / self.size).tolist()

    def iallreduce(self, buffer):
        """Start summing ``buffer`` (a flat host array) over the ranks in place; the request to
        wait() for (None with one rank: the sum is the buffer)."""
        if self.comm is None:
            return None
        from mpi4py import MPI

        return self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

    def wait(self, request, what):
        """Wait for a non-blocking collective, at most ``timeout`` seconds; then say so and abort
        every rank (the others are stuck or gone: MPI alone would wait for them forever)."""
        deadline = time.monotonic() + self.timeout
        while not request.Test():  # Test() also moves MPI's progress engine on
            if time.monotonic() > deadline:
                others = "the other rank" if self.size == 2 else f"one of the other {self.size - 1} ranks"
                message = (f"minillm.distributed: rank {self.rank} of {self.size} waited {self.timeout:g} s "
                           f"({TIMEOUT_VARIABLE}) in {what} for {others}, which stopped answering (stuck, stopped "
                           "or dead): aborting every rank")
                sys.stderr.write(message + "\n")
                self.abort(1)  # ends this process too; the raise is for a world without a launcher
                raise TimeoutError(message)
            time.sleep(0.0002)

    def meet(self, what):
        """Wait (at most ``timeout``) until every rank has come here: a non-blocking barrier in front
        of a blocking collective of Python objects, which could otherwise hang."""
        if self.comm is not None:
            self.wait(self.comm.Ibarrier(), what)

    def gather(self, value):
        """Every rank's ``value`` (a picklable object) as a list on rank 0, None on the others."""
        if self.comm is None:
            return [value]
        self.meet("a gather")
        return self.comm.gather(value, root=0)

    def allgather(self, value):
        if self.comm is None:
            return [value]
        self.meet("an allgather")
        return self.comm.allgather(value)

    def broadcast(self, array):
        """rank 0's ``array`` into every rank's, in place."""
        if self.comm is not None:
            self.wait(self.comm.Ibcast(array, root=0), "a broadcast of the parameters")

    def abort(self, code):
        """End every rank's process (MPI_Abort) when there are others; nothing with one rank. First a
        moment for the launcher to forward what this rank wrote to stderr: Abort kills the ranks at
        once, and a message still on its way can be lost (a timeout's was missing from mpiexec's output
        once in six test-suite runs here)."""
        if self.size > 1:
            sys.stderr.flush()
            time.sleep(0.5)
            self.comm.Abort(code)

    def barrier(self):
        self.meet("a barrier")


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
            _world = World(MPI.COMM_WORLD, collective_timeout())
            if _world.size > 1:
                _abort_on_exception(_world)
                # the launcher names a killed process by its PID: this line says whose it is
                sys.stderr.write(f"minillm.distributed: rank {_world.rank} of {_world.size} is pid {os.getpid()} "
                                 f"on {socket.gethostname()}\n")
    return _world


def _abort_on_exception(w):
    """sys.excepthook: the traceback headed 'rank r of n', then MPI_Abort (every rank stops)."""
    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.flush()
        os.write(2, f"minillm.distributed: rank {w.rank} of {w.size} failed, aborting every rank:\n{text}".encode())
        w.abort(1)  # straight to fd 2 above, then abort's moment for the launcher to forward it

    sys.excepthook = hook
