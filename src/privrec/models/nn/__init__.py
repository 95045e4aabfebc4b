"""The torch networks of the neural models, importable and testable on their own.

- `runtime`: torch threads, device resolution, the torch.distributed context (no torch import
  until a helper is called, so models can import it cheaply).
- `sequence`: the SASRec / BERT4Rec transformer (item encoder, blocks, network) and DP-SASRec's
  per-user loss module.
- `fism`: the FISM-style BPR tables and losses of BPR / APR and DP-BPR's per-user loss module.

`sequence` and `fism` import torch when imported: import them where training or scoring starts.
"""
