"""The course's import paths (`tinytorch.core.tensor`, `.layers`, ...).

Thin re-exports: each name is the one object defined elsewhere in tinytorch,
so `tinytorch.core.layers.Dense is tinytorch.nn.Linear`.
"""
