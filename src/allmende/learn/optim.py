"""SGD and Adam for local training, on torch's functional optimizer API.

Making any ``torch.optim`` optimizer imports ``torch._dynamo`` (its ``add_param_group`` and
``step`` are wrapped to keep the compiler out), which pulls in sympy and costs every node
seconds of start-up for code a CPU trainer never runs. ``torch.optim.sgd.sgd`` and
``torch.optim.adam.adam`` are the functions those classes' ``step`` calls to do the arithmetic;
:class:`LocalOptimizer` keeps the same per-parameter state and calls them with the same
arguments, so training gives the same bytes as ``torch.optim.SGD`` / ``torch.optim.Adam`` with
``foreach=False`` (a test compares them step by step).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from allmende.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


class LocalOptimizer:
    """``sgd`` (with optional momentum) or ``adam`` (``momentum`` is its beta1) over ``params``.

    Semantics are ``torch.optim``'s defaults otherwise: no dampening, no Nesterov, no AMSGrad,
    L2 weight decay added to the gradient. :meth:`zero_grad` sets the gradients to None.
    """

    def __init__(
        self,
        name: str,
        params: list[torch.nn.Parameter],
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
    ) -> None:
        if name not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer '{name}'; use one of: {', '.join(OPTIMIZERS)}.")
        if not lr > 0:
            raise ConfigError(f"The learning rate must be > 0, got {lr}; set optimizer.lr.")
        if not 0 <= momentum < 1:
            raise ConfigError(
                f"momentum must be in [0, 1), got {momentum}; set optimizer.momentum."
            )
        if not weight_decay >= 0:
            raise ConfigError(
                f"weight_decay must be >= 0, got {weight_decay}; set optimizer.weight_decay."
            )
        self.name = name
        self.params = list(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._state: dict[int, dict[str, Tensor]] = {}  # parameter index -> its state

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        indices = [i for i, param in enumerate(self.params) if param.grad is not None]
        params: list[Tensor] = [self.params[i] for i in indices]
        grads: list[Tensor] = [param.grad for param in params]  # type: ignore[misc]
        if self.name == "sgd":
            self._sgd(indices, params, grads)
        else:
            self._adam(indices, params, grads)

    def _sgd(self, indices: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        with_momentum = self.momentum != 0
        buffers: list[Tensor | None] = (
            [self._state.get(i, {}).get("momentum_buffer") for i in indices]
            if with_momentum
            else []
        )
        sgd(
            params,
            grads,
            buffers,
            has_sparse_grad=any(grad.is_sparse for grad in grads),
            foreach=False,
            fused=None,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        if with_momentum:  # sgd() made the first buffers
            for i, buffer in zip(indices, buffers, strict=True):
                assert buffer is not None
                self._state[i] = {"momentum_buffer": buffer}

    def _adam(self, indices: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for i, param in zip(indices, params, strict=True):
            if i not in self._state:
                self._state[i] = {
                    "step": torch.tensor(0.0, dtype=scalar, device="cpu"),
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                }
        states = [self._state[i] for i in indices]
        adam(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"] for state in states],
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=None,
            grad_scale=None,
            found_inf=None,
            has_complex=any(torch.is_complex(param) for param in params),
            decoupled_weight_decay=False,
            amsgrad=False,
            beta1=self.momentum,
            beta2=ADAM_BETA2,
            lr=self.lr,
            weight_decay=self.weight_decay,
            eps=ADAM_EPS,
            maximize=False,
        )
