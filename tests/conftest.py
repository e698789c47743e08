"""Shared fixtures. A test may skip only for a missing GPU or a missing optional oracle or extra
(torch, transformers, sentence-transformers, captum, matplotlib, mpi4py; the pretrained model, the
SST-2 data); CI sets MINILLM_REQUIRE_PARITY=1, MINILLM_REQUIRE_PRETRAINED=1 and
MINILLM_REQUIRE_DISTRIBUTED=1, under which those skips become failures."""
import importlib
import os
import pathlib

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("minillm", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("minillm")

REPO = pathlib.Path(__file__).resolve().parent.parent


def _required(variable):
    return os.environ.get(variable, "0") == "1"


def missing(what, variable):
    """Skip (or, when ``variable`` is set to 1, fail) because ``what`` is not available."""
    if _required(variable):
        pytest.fail(f"{what} is missing but {variable}=1 requires it")
    pytest.skip(f"{what} is not available")


def optional(module, extra="parity", variable="MINILLM_REQUIRE_PARITY"):
    """The module ``module`` of the extra ``extra``, or a skip (a failure when ``variable`` is 1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(f"{module} (pip install -e '.[{extra}]')", variable)


@pytest.fixture
def compiled_kernels():
    """The compiled twins for the test, whatever MINILLM_KERNELS says (the kernel tests' pytestmark)."""
    from minillm import kernels
    with kernels.use("compiled"):
        yield


@pytest.fixture(scope="session")
def torch():
    """The torch oracle (the `parity` extra)."""
    torch_module = optional("torch")
    torch_module.set_num_threads(1)
    return torch_module


@pytest.fixture(scope="session")
def transformers(torch):
    return optional("transformers")


@pytest.fixture(scope="session")
def sklearn():
    """scikit-learn, the metrics' oracle (the `parity` extra)."""
    optional("sklearn")
    return optional("sklearn.metrics")


@pytest.fixture(scope="session")
def matplotlib():
    """matplotlib, for --plot (the `plot` extra)."""
    return optional("matplotlib", "plot")


@pytest.fixture(scope="session")
def sst2_dir():
    """The GLUE SST-2 folder (train.tsv, dev.tsv), from MINILLM_DATA or ../shared/data."""
    root = pathlib.Path(os.environ.get("MINILLM_DATA", REPO.parent / "shared" / "data"))
    folder = root / "sst2"
    if not (folder / "train.tsv").is_file():
        missing(f"the SST-2 data ({folder})", "MINILLM_REQUIRE_PRETRAINED")
    return folder


@pytest.fixture(scope="session")
def minilm_dir():
    """The all-MiniLM-L6-v2 folder, through minillm.pretrained (fetched into MINILLM_HOME once)."""
    from minillm import pretrained

    try:
        return pretrained.resolve("all-MiniLM-L6-v2")
    except pretrained.ModelNotAvailable as err:
        missing(f"the pretrained model all-MiniLM-L6-v2 ({err})", "MINILLM_REQUIRE_PRETRAINED")


@pytest.fixture(scope="session")
def cupy():
    """CuPy on a working GPU. Without one the test skips, the one hardware skip there is."""
    from minillm import cuda

    reason = cuda.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no GPU: {reason}")
    import cupy as cupy_module
    return cupy_module


@pytest.fixture(scope="session")
def device():
    """The device the device-aware tests run on: MINILLM_DEVICE ('cpu' by default; 'cuda' runs them
    on the GPU, and skips them, the one hardware skip, where there is none)."""
    name = os.environ.get("MINILLM_DEVICE", "cpu")
    if name != "cpu":
        from minillm import cuda

        reason = cuda.unavailable_reason()
        if reason is not None:
            pytest.skip(f"no GPU for MINILLM_DEVICE={name}: {reason}")
    return name
