"""A decoder-only transformer over bytes, in the manner of nanoGPT's ``model.py``.

Tokens are bytes (vocabulary 256). The model adds a learned position embedding to the token
embedding, runs ``n_layer`` pre-LayerNorm blocks (causal self-attention, then an MLP, each with
a residual connection), a final LayerNorm, and reads logits with the token embedding's own
weights (weight tying)::

    (b, t) bytes -> (b, t, n_embd) -> n_layer x Block -> LayerNorm -> (b, t, 256) logits

No dropout: training must give the same bytes on every run (see :mod:`allmende.learn.train`).
Parameters are built from torch's global RNG only, initialised as GPT-2 does (normal, std 0.02;
the residual projections scaled by ``1/sqrt(2 * n_layer)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB = 256  # one token per byte value


@dataclass(frozen=True)
class GPTConfig:
    """The size of the model: layers, heads, embedding width and context length."""

    n_layer: int
    n_head: int
    n_embd: int
    context: int


def n_params(config: GPTConfig) -> int:
    """The model's number of parameters, without building it (tied weights counted once)."""
    e, layers = config.n_embd, config.n_layer
    embeddings = VOCAB * e + config.context * e
    layer_norms = 2 * 2 * e
    attention = (3 * e * e + 3 * e) + (e * e + e)
    mlp = (4 * e * e + 4 * e) + (4 * e * e + e)
    per_block = layer_norms + attention + mlp
    return embeddings + layers * per_block + 2 * e


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``i`` only sees positions ``<= i``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one product
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        b, t, e = x.shape  # (b, t, n_embd)
        q, k, v = self.attn(x).split(e, dim=2)  # each (b, t, n_embd)
        q = q.view(b, t, self.n_head, e // self.n_head).transpose(1, 2)  # (b, h, t, e/h)
        k = k.view(b, t, self.n_head, e // self.n_head).transpose(1, 2)  # (b, h, t, e/h)
        v = v.view(b, t, self.n_head, e // self.n_head).transpose(1, 2)  # (b, h, t, e/h)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, h, t, e/h)
        y = y.transpose(1, 2).contiguous().view(b, t, e)  # (b, t, n_embd), heads side by side
        return self.proj(y)


class MLP(nn.Module):
    """Linear to ``4 * n_embd``, GELU, linear back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (b, t, n_embd)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))  # (b, t, n_embd)
        return x + self.mlp(self.ln_2(x))


class ByteGPT(nn.Module):
    """The whole model: embeddings, blocks, final LayerNorm, tied output head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(VOCAB, config.n_embd)  # token embedding, also the output head
        self.wpe = nn.Embedding(config.context, config.n_embd)  # position embedding
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif param.dim() >= 2:
                std = 0.02
                if name.endswith("proj.weight"):  # the residual projections
                    std = 0.02 / math.sqrt(2 * config.n_layer)
                nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits ``(b, t, 256)`` of the next byte at every position of ``idx`` ``(b, t)``."""
        _, t = idx.shape
        if t > self.config.context:
            raise ValueError(f"{t} bytes exceed the model's context of {self.config.context}")
        pos = torch.arange(t, device=idx.device)  # (t,)
        x = self.wte(idx) + self.wpe(pos)  # (b, t, n_embd)
        for block in self.blocks:
            x = block(x)  # (b, t, n_embd)
        x = self.ln_f(x)
        return x @ self.wte.weight.T  # (b, t, 256): the tied head

    @torch.no_grad()
    def generate(
        self, idx: Tensor, n_new: int, *, temperature: float, generator: torch.Generator
    ) -> Tensor:
        """``idx`` ``(1, t)`` followed by ``n_new`` bytes sampled one at a time at
        ``temperature`` (0: always the likeliest byte); the model sees the last ``context``."""
        for _ in range(n_new):
            window = idx[:, -self.config.context :]  # (1, <= context)
            logits = self(window)[:, -1, :]  # (1, 256): the next byte
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
            else:
                probs = F.softmax(logits / temperature, dim=-1)  # (1, 256)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
            idx = torch.cat([idx, nxt], dim=1)  # (1, t + 1)
        return idx
