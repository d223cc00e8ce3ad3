"""Optimizers: SGD (momentum, weight decay) and Adam, with PyTorch's update rules."""
import numpy as np

from .tensor import Tensor


class Optimizer:
    """Holds the parameters to update; `zero_grad()` clears their gradients."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a "
                                f"{type(p).__name__}, not a Tensor (pass model.parameters())")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _gradients(self, weight_decay):
        """(parameter, gradient + weight_decay * parameter) for every parameter with a grad."""
        for p in self.params:
            if p.grad is not None:
                g = p.grad.data
                yield p, g + weight_decay * p.data if weight_decay else g


class SGD(Optimizer):
    """p -= lr * v, where v = momentum * v + (grad + weight_decay * p)."""

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self._velocity = {}

    def step(self):
        for p, g in self._gradients(self.weight_decay):
            if self.momentum:
                v = self._velocity.get(id(p))
                if v is None:
                    v = self._velocity[id(p)] = g.astype(p.dtype, copy=True)
                else:
                    v *= self.momentum
                    v += g
                g = v
            _subtract(p, self.lr * g)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay adds to the gradient (L2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self._state = {}

    def step(self):
        b1, b2 = self.betas
        for p, g in self._gradients(self.weight_decay):
            state = self._state.get(id(p))
            if state is None:
                state = self._state[id(p)] = [np.zeros_like(p.data), np.zeros_like(p.data), 0]
            m, v, t = state
            state[2] = t = t + 1
            m *= b1                                   # m = b1 m + (1 - b1) g
            m += (1 - b1) * g
            v *= b2                                   # v = b2 v + (1 - b2) g^2
            v += (1 - b2) * g * g
            denom = np.sqrt(v / (1 - b2 ** t))
            denom += self.eps
            step = m * (self.lr / (1 - b1 ** t))
            step /= denom
            _subtract(p, step)


def _subtract(p, delta):
    """p.data -= delta in place, as PyTorch's optimizers update parameters: no new
    full-size array per parameter per step. (A read-only array is replaced instead.)"""
    if p.data.flags.writeable:
        p.data -= delta
    else:
        p.data = (p.data - delta).astype(p.dtype, copy=False)
