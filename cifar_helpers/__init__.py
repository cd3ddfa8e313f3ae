"""Helpers for the executable CIFAR-10 tutorial: data, models, training, evaluation, plots.

Importing the package does no work; import the submodules you need, e.g.
``from cifar_helpers import data, models``.
"""

__version__ = "0.1.0"
