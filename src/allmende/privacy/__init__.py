"""Privacy for data owners: client-level differential privacy, its accountant, a budget.

- :mod:`allmende.privacy.dp`: clip an update and add Gaussian noise on the trainer
  (:func:`privatize`), each trainer's noise share (:func:`noise_share_std`);
- :mod:`allmende.privacy.accountant`: the noise multiplier for a target (ε, δ) and the ε
  spent after k rounds, from Google's ``dp-accounting``;
- :mod:`allmende.privacy.sampling`: the public draw of the trainers of each round;
- :mod:`allmende.privacy.spec`: a job's ``[privacy]`` section;
- :mod:`allmende.privacy.budget`: the ledger of ε spent per declared dataset.

Names are imported on first use (torch and scipy load only when needed), so a job spec can
name :class:`PrivacySpec` without importing the accountant.
"""

from importlib import import_module as _import_module
from typing import Any as _Any

_MODULE_OF = {
    "DatasetSpend": "budget",
    "JobSpend": "budget",
    "PrivacyLedger": "budget",
    "PrivacySpec": "spec",
    "clip": "dp",
    "epsilon_spent": "accountant",
    "is_sampled": "sampling",
    "noise_generator": "dp",
    "noise_multiplier_for": "accountant",
    "noise_share_std": "dp",
    "privatize": "dp",
    "sampled": "sampling",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> _Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'allmende.privacy' has no attribute {name!r}")
    return getattr(_import_module(f"allmende.privacy.{module}"), name)
