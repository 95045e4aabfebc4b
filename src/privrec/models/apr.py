"""APR: Adversarial Personalized Ranking (He et al., SIGIR 2018) on privrec's BPR-MF.

APR trains BPR-MF so that its ranking survives a small worst-case perturbation of the embedding
tables. For each batch, the gradient G of the BPR loss with respect to each table (P: target
items, Q: history items, which make up the user vectors) gives the fast-gradient perturbation

    delta = eps * G / |G|          (row-wise L2 normalisation, as in the authors' code)

and the loss becomes  L_BPR(theta) + reg_adv * L_BPR(theta + delta), with delta held constant (no
gradient flows through it). As in the paper, the model may first be trained as plain BPR for
`adv_start_epoch` epochs. With reg_adv = 0 (or eps = 0) nothing is added and training is exactly
BPR's, bit for bit.

Why it is in privrec: adversarially trained embeddings are smoother, which helps ranking accuracy
and blunts poisoning (fake shoppers nudging embeddings); see `privrec.evaluation.robustness`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from privrec.models.base import register
from privrec.models.bpr import BPR, Batch, BPRConfig

if TYPE_CHECKING:
    import torch


class APRConfig(BPRConfig):
    """APR settings: BPR's, plus the adversary.

    Attributes:
        eps: L2 size of the per-row perturbation of the embedding tables.
        reg_adv: weight of the adversarial BPR loss (0 turns APR into plain BPR).
        adv_start_epoch: plain-BPR epochs before the adversarial term starts (paper: pretraining).
        perturb_bias: also perturb the item biases (the paper perturbs embeddings only).
    """

    eps: float = Field(default=0.5, ge=0.0)
    reg_adv: float = Field(default=1.0, ge=0.0)
    adv_start_epoch: int = Field(default=0, ge=0)
    perturb_bias: bool = False


@register
class APR(BPR):
    """BPR-MF with adversarial training of its embedding tables (APR)."""

    name = "apr"
    Config = APRConfig
    config: APRConfig

    def _extra_loss(self, params: dict[str, torch.Tensor], batch: Batch, bpr_loss: torch.Tensor) -> torch.Tensor | None:
        """reg_adv * BPR loss of the batch under the fast-gradient perturbation of the tables."""
        import torch
        import torch.nn.functional as F

        c = self.config
        if c.reg_adv == 0.0 or c.eps == 0.0 or self._epoch < c.adv_start_epoch:
            return None
        names = ["target", "context"] + (["bias"] if c.perturb_bias else [])
        grads = torch.autograd.grad(bpr_loss, [params[n] for n in names], retain_graph=True)
        perturbed = dict(params)
        for n, g in zip(names, grads, strict=True):
            g = g.detach()
            # row-wise normalisation: each touched row moves by eps; untouched rows (zero grad) stay
            norm = g.norm(dim=1, keepdim=True) if g.dim() == 2 else g.abs()
            delta = c.eps * g / norm.clamp(min=1e-12)
            perturbed[n] = params[n] + delta
        x_pos, x_neg, _ = self.pair_scores(perturbed, batch)
        return c.reg_adv * -F.logsigmoid(x_pos - x_neg).mean()
