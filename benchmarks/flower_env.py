"""Create ``benchmarks/.venv-flower``: a separate virtual environment holding Flower.

Flower pins its own dependency set (Ray, grpcio, protobuf), which must never leak into the
project's ``.venv`` nor into ``make test``. The venv gets, in this order:

1. ``torch==2.13.0`` (the same CPU build as the project venv, installed first so Flower's
   resolver keeps it);
2. ``flwr[simulation]==1.41.0`` (pinned: newer releases need a ``certifi`` the package mirror
   here lacks), scikit-learn (the digits data set) and the small libraries ``allmende.learn``
   imports;
3. allmende itself with ``--no-deps``, editable, so the Flower run uses the very same task code
   (model, partitions, local training) as the plain PyTorch loop and Allmende.

Creation is idempotent: a sentinel file records the pinned requirements; when it matches,
nothing is done. Run it directly (``python benchmarks/flower_env.py``) or let ``run_all.py``
call :func:`ensure_flower_env`.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
FLOWER_VENV = BENCH_DIR / ".venv-flower"
SENTINEL_NAME = ".ready"

TORCH_REQUIREMENT = "torch==2.13.0"
FLOWER_REQUIREMENT = "flwr[simulation]==1.41.0"
# What allmende.learn needs at import time besides torch; versions match the project venv's range.
SUPPORT_REQUIREMENTS = (
    "scikit-learn>=1.5,<2",
    "numpy>=2.0,<3",
    "pydantic>=2.7,<3",
    "safetensors>=0.4,<0.9",
)


def flower_python() -> Path:
    """The interpreter of the Flower venv (it may not exist yet)."""
    return FLOWER_VENV / "bin" / "python"


def _sentinel_text() -> str:
    return "\n".join([TORCH_REQUIREMENT, FLOWER_REQUIREMENT, *SUPPORT_REQUIREMENTS]) + "\n"


def is_ready() -> bool:
    """True when the venv exists and was built from the current pinned requirements."""
    sentinel = FLOWER_VENV / SENTINEL_NAME
    return (
        flower_python().is_file()
        and sentinel.is_file()
        and sentinel.read_text() == _sentinel_text()
    )


def _pip(*args: str) -> None:
    command = [str(flower_python()), "-m", "pip", "install", "--quiet", "--quiet", *args]
    print("  $ pip install " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def ensure_flower_env(*, progress: bool = True) -> Path:
    """Create (or reuse) the Flower venv and return its Python interpreter.

    Raises ``subprocess.CalledProcessError`` when pip fails; its output says which package.
    """
    if is_ready():
        return flower_python()
    if progress:
        print(f"Creating the Flower environment in {FLOWER_VENV.relative_to(PROJECT_ROOT)} "
              "(one-off, a few minutes) ...", flush=True)
    (FLOWER_VENV / SENTINEL_NAME).unlink(missing_ok=True)
    venv.EnvBuilder(with_pip=True, clear=not flower_python().is_file()).create(FLOWER_VENV)
    _pip(TORCH_REQUIREMENT)
    _pip(FLOWER_REQUIREMENT, *SUPPORT_REQUIREMENTS)
    _pip("--no-deps", "-e", str(PROJECT_ROOT))
    subprocess.run(
        [str(flower_python()), "-c", "import flwr, ray, torch, allmende; print('flwr', "
         "flwr.__version__ if hasattr(flwr, '__version__') else '?', 'ray', ray.__version__, "
         "'torch', torch.__version__)"],
        check=True,
    )
    (FLOWER_VENV / SENTINEL_NAME).write_text(_sentinel_text())
    if progress:
        print("Flower environment ready.", flush=True)
    return flower_python()


if __name__ == "__main__":
    try:
        ensure_flower_env()
    except subprocess.CalledProcessError as error:
        sys.exit(f"Creating the Flower environment failed ({error}); read pip's output above, "
                 f"then delete {FLOWER_VENV} and run this again.")
