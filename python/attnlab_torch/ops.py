"""The array operations every formula in this package is written with, for two backends.

attnlab's forward is written once, against the small namespace below, and runs on either
``NumpyOps`` (float64, no torch needed: what CI's parity test uses) or ``TorchOps`` (float32
tensors with autograd: what ``attnlab_torch.load`` builds an ``nn.Module`` from). The two
classes have the same methods with the same meaning; a formula never imports numpy or torch
itself, so the torch module cannot drift from the numbers CI checks.

Conventions: ``axis`` is numpy's axis (torch's ``dim``); shapes are tuples; booleans come from
comparisons or ``tril``. Plain Python slicing (``x[..., :d]``) and arithmetic operators work on
both backends' arrays and are used directly.
"""

import math


class NumpyOps:
    """numpy in float64: the reference the parity test compares attnlab's logits with."""

    name = "numpy"

    def __init__(self):
        import numpy as np

        self.np = np
        self._erf = np.vectorize(math.erf, otypes=[np.float64])

    # conversion
    def asarray(self, a):
        return self.np.asarray(a, dtype=self.np.float64)

    def to_numpy(self, x):
        return self.np.asarray(x)

    def long(self, a):
        return self.np.asarray(a, dtype=self.np.int64)

    # construction
    def zeros(self, shape):
        return self.np.zeros(shape)

    def ones(self, shape):
        return self.np.ones(shape)

    def eye(self, n):
        return self.np.eye(n)

    def arange(self, n):
        """``[0, 1, ..., n-1]`` as floats."""
        return self.np.arange(n, dtype=self.np.float64)

    def tril(self, n, m=None, k=0):
        """Boolean ``[n, m]`` mask, true where ``col <= row + k``."""
        return self.np.tri(n, m if m is not None else n, k, dtype=bool)

    # elementwise
    def exp(self, x):
        return self.np.exp(x)

    def log(self, x):
        return self.np.log(x)

    def log1p(self, x):
        return self.np.log1p(x)

    def expm1(self, x):
        return self.np.expm1(x)

    def sqrt(self, x):
        return self.np.sqrt(x)

    def abs(self, x):
        return self.np.abs(x)

    def sign(self, x):
        return self.np.sign(x)

    def tanh(self, x):
        return self.np.tanh(x)

    def sin(self, x):
        return self.np.sin(x)

    def cos(self, x):
        return self.np.cos(x)

    def erf(self, x):
        return self._erf(x)

    def floor(self, x):
        return self.np.floor(x)

    def maximum(self, a, b):
        return self.np.maximum(a, b)

    def minimum(self, a, b):
        return self.np.minimum(a, b)

    def where(self, cond, a, b):
        return self.np.where(cond, a, b)

    def clip(self, x, lo=None, hi=None):
        return self.np.clip(x, lo, hi)

    # reductions and scans
    def sum(self, x, axis=None, keepdims=False):
        return self.np.sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return self.np.mean(x, axis=axis, keepdims=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return self.np.max(x, axis=axis, keepdims=keepdims)

    def cumsum(self, x, axis):
        return self.np.cumsum(x, axis=axis)

    def logsumexp(self, x, axis, keepdims=False):
        m = self.np.max(x, axis=axis, keepdims=True)
        m = self.np.where(self.np.isfinite(m), m, 0.0)
        out = self.np.log(self.np.sum(self.np.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else self.np.squeeze(out, axis=axis)

    # shape
    def reshape(self, x, shape):
        return self.np.reshape(x, shape)

    def transpose(self, x, axes):
        return self.np.transpose(x, axes)

    def swapaxes(self, x, a, b):
        return self.np.swapaxes(x, a, b)

    def expand_dims(self, x, axis):
        return self.np.expand_dims(x, axis)

    def concat(self, xs, axis):
        return self.np.concatenate(xs, axis=axis)

    def stack(self, xs, axis):
        return self.np.stack(xs, axis=axis)

    def flip(self, x, axis):
        return self.np.flip(x, axis=axis)

    def pad_front(self, x, axis, n):
        """Prepends ``n`` zeros along ``axis``."""
        widths = [(0, 0)] * x.ndim
        widths[axis] = (n, 0)
        return self.np.pad(x, widths)

    # linear algebra
    def matmul(self, a, b):
        return self.np.matmul(a, b)

    def einsum(self, spec, *xs):
        return self.np.einsum(spec, *xs)

    def take_rows(self, table, ids):
        """``table[ids]`` for an integer array ``ids`` (embedding lookup)."""
        return table[self.np.asarray(ids, dtype=self.np.int64)]

    # composites used throughout
    def sigmoid(self, x):
        return 0.5 * (1.0 + self.np.tanh(0.5 * x))

    def logsigmoid(self, x):
        return -self.softplus(-x)

    def softplus(self, x):
        return self.np.logaddexp(0.0, x)

    def relu(self, x):
        return self.np.maximum(x, 0.0)

    def silu(self, x):
        return x * self.sigmoid(x)

    def elu(self, x):
        return self.np.where(x > 0, x, self.np.expm1(self.np.minimum(x, 0.0)))

    def softmax(self, x, axis):
        m = self.np.max(x, axis=axis, keepdims=True)
        m = self.np.where(self.np.isfinite(m), m, 0.0)
        e = self.np.exp(x - m)
        return e / self.np.sum(e, axis=axis, keepdims=True)


class TorchOps:
    """torch in float32 (by default), with autograd: the ops behind the ``nn.Module``."""

    name = "torch"

    def __init__(self, dtype=None, device=None):
        import torch

        self.torch = torch
        self.dtype = dtype or torch.float32
        self.device = device

    def asarray(self, a):
        t = self.torch
        if isinstance(a, t.Tensor):
            return a.to(dtype=self.dtype, device=self.device)
        return t.as_tensor(a, dtype=self.dtype, device=self.device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def long(self, a):
        return self.torch.as_tensor(a, dtype=self.torch.long, device=self.device)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def ones(self, shape):
        return self.torch.ones(shape, dtype=self.dtype, device=self.device)

    def eye(self, n):
        return self.torch.eye(n, dtype=self.dtype, device=self.device)

    def arange(self, n):
        return self.torch.arange(n, dtype=self.dtype, device=self.device)

    def tril(self, n, m=None, k=0):
        m = m if m is not None else n
        return self.torch.ones(n, m, dtype=self.torch.bool, device=self.device).tril(k)

    def exp(self, x):
        return self.torch.exp(x)

    def log(self, x):
        return self.torch.log(x)

    def log1p(self, x):
        return self.torch.log1p(x)

    def expm1(self, x):
        return self.torch.expm1(x)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def abs(self, x):
        return self.torch.abs(x)

    def sign(self, x):
        return self.torch.sign(x)

    def tanh(self, x):
        return self.torch.tanh(x)

    def sin(self, x):
        return self.torch.sin(x)

    def cos(self, x):
        return self.torch.cos(x)

    def erf(self, x):
        return self.torch.erf(x)

    def floor(self, x):
        return self.torch.floor(x)

    def _t(self, a, like):
        return a if isinstance(a, self.torch.Tensor) else self.torch.as_tensor(a, dtype=like.dtype, device=like.device)

    def maximum(self, a, b):
        like = a if isinstance(a, self.torch.Tensor) else b
        return self.torch.maximum(self._t(a, like), self._t(b, like))

    def minimum(self, a, b):
        like = a if isinstance(a, self.torch.Tensor) else b
        return self.torch.minimum(self._t(a, like), self._t(b, like))

    def where(self, cond, a, b):
        like = a if isinstance(a, self.torch.Tensor) else b
        if not isinstance(like, self.torch.Tensor):
            like = self.zeros(())
        return self.torch.where(self._t(cond, self.torch.zeros((), dtype=self.torch.bool)), self._t(a, like), self._t(b, like))

    def clip(self, x, lo=None, hi=None):
        return self.torch.clamp(x, lo, hi)

    def sum(self, x, axis=None, keepdims=False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return x.max() if axis is None else x.amax(dim=axis, keepdim=keepdims)

    def cumsum(self, x, axis):
        return self.torch.cumsum(x, dim=axis)

    def logsumexp(self, x, axis, keepdims=False):
        return self.torch.logsumexp(x, dim=axis, keepdim=keepdims)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def transpose(self, x, axes):
        return x.permute(*axes)

    def swapaxes(self, x, a, b):
        return x.transpose(a, b)

    def expand_dims(self, x, axis):
        return x.unsqueeze(axis)

    def concat(self, xs, axis):
        return self.torch.cat(list(xs), dim=axis)

    def stack(self, xs, axis):
        return self.torch.stack(list(xs), dim=axis)

    def flip(self, x, axis):
        return self.torch.flip(x, dims=(axis,))

    def pad_front(self, x, axis, n):
        shape = list(x.shape)
        shape[axis] = n
        return self.torch.cat([x.new_zeros(shape), x], dim=axis)

    def matmul(self, a, b):
        return self.torch.matmul(a, b)

    def einsum(self, spec, *xs):
        return self.torch.einsum(spec, *xs)

    def take_rows(self, table, ids):
        return table[self.long(ids)]

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def logsigmoid(self, x):
        return self.torch.nn.functional.logsigmoid(x)

    def softplus(self, x):
        return self.torch.nn.functional.softplus(x)

    def relu(self, x):
        return self.torch.relu(x)

    def silu(self, x):
        return self.torch.nn.functional.silu(x)

    def elu(self, x):
        return self.torch.nn.functional.elu(x)

    def softmax(self, x, axis):
        return self.torch.softmax(x, dim=axis)
