"""User-level differentially private models.

`release` holds what every DP model shares (the opening of a DP fit, contribution bounds, noisy
counts and item selection, the one item-item Gram release), `gram` the one fit of the models
built on that Gram release (DP item-kNN, DP EASE), `opacus` the DP-SGD wrapper of the two
DP-SGD models (DP-BPR, DP-SASRec). Nothing is imported here, so importing one DP model does not
import torch or the others.
"""
