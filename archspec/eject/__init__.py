"""`archspec eject`: the compiled network as standalone, readable PyTorch source.

One class per spec block (and per kind of residual/concat written outside a block), the network
as a class, loops for repeated blocks; the file imports only torch (and `math`, for the attention's
scale and the peephole LSTM's init; `collections.namedtuple`, for several outputs). The ejected model has `archspec.build`'s state-dict keys, in
the same order, and its outputs. Three steps: `tree` reads the graph IR beside the built module
into one tree per use of a block, `classes` generalises the uses of each block into one class
with constructor arguments, `write` writes the source.
"""

from .write import eject_source

__all__ = ["eject_source"]
