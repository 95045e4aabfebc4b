"""APR: Adversarial Personalized Ranking (He et al., SIGIR 2018) on privrec's BPR-MF.

APR trains BPR-MF so that its ranking survives a small worst-case perturbation of the
embeddings. For each batch, the gradient G of the BPR loss with respect to each perturbed
embedding gives the fast-gradient perturbation

    delta = eps * G / |G|          (row-wise L2 normalisation, as in the authors' code)

and the loss becomes  L_BPR(theta) + reg_adv * L_BPR(theta + delta), with delta held constant (no
gradient flows through it). What is perturbed (`perturb`):

- "user_item" (default): each user vector u and the item table P, each row by eps. In the
  paper's matrix factorisation a user *is* one embedding row; privrec's BPR derives u from the
  history (u = |h|^-a sum_j h_j q_j), so this is the paper's adversary for this model.
- "tables": the item table P and the history table Q row by row. The user vector then moves by
  up to eps |h|^(1-a), which grows with the history: long histories get a much larger adversary
  (on MovieLens-100K, heavy users' vectors move by several times eps).

As in the paper, the model may first be trained as plain BPR for `adv_start_epoch` epochs. With
reg_adv = 0 (or eps = 0) nothing is added and training is exactly BPR's, bit for bit.

Why it is in privrec: adversarially trained embeddings are smoother, which helps ranking accuracy
and blunts poisoning (fake shoppers nudging embeddings); see `privrec.evaluation.robustness`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from privrec.models.base import register
from privrec.models.bpr import BPR, BPRConfig

if TYPE_CHECKING:
    import torch

    from privrec.models.nn.fism import Batch


class APRConfig(BPRConfig):
    """APR settings: BPR's, plus the adversary.

    Attributes:
        eps: L2 size of the per-row perturbation of the embedding tables.
        reg_adv: weight of the adversarial BPR loss (0 turns APR into plain BPR).
        adv_start_epoch: plain-BPR epochs before the adversarial term starts (paper: pretraining).
        perturb_bias: also perturb the item biases (the paper perturbs embeddings only).
        perturb: "user_item" (user vectors and item table) or "tables" (item and history
            tables); see the module docstring.
    """

    eps: float = Field(default=0.5, ge=0.0)
    reg_adv: float = Field(default=1.0, ge=0.0)
    adv_start_epoch: int = Field(default=0, ge=0)
    perturb_bias: bool = False
    perturb: Literal["user_item", "tables"] = "user_item"


@register
class APR(BPR):
    """BPR-MF with adversarial training of its embedding tables (APR)."""

    name = "apr"
    Config = APRConfig
    config: APRConfig

    def _extra_loss(
        self, params: dict[str, torch.Tensor], batch: Batch, bpr_loss: torch.Tensor
    ) -> torch.Tensor | None:
        """reg_adv * BPR loss of the batch under the fast-gradient perturbation of the tables."""
        import torch
        import torch.nn.functional as F

        c = self.config
        if c.reg_adv == 0.0 or c.eps == 0.0 or self._epoch < c.adv_start_epoch:
            return None
        items = ["target"] + (["bias"] if c.perturb_bias else [])
        if c.perturb == "tables":
            names = [items[0], "context", *items[1:]]
            grads = torch.autograd.grad(bpr_loss, [params[n] for n in names], retain_graph=True)
            perturbed = {
                **params,
                **{
                    n: params[n] + _fast_gradient(g, c.eps)
                    for n, g in zip(names, grads, strict=True)
                },
            }
            x_pos, x_neg, _ = self.pair_scores(perturbed, batch)
        else:
            u = self.user_vectors_torch(params, batch)
            x_pos, x_neg, _ = self.scores_for(u, params, batch)
            clean = -F.logsigmoid(x_pos - x_neg).mean()
            g_u, *g_items = torch.autograd.grad(
                clean, [u, *(params[n] for n in items)], retain_graph=True
            )
            perturbed = {
                **params,
                **{
                    n: params[n] + _fast_gradient(g, c.eps)
                    for n, g in zip(items, g_items, strict=True)
                },
            }
            x_pos, x_neg, _ = self.scores_for(u + _fast_gradient(g_u, c.eps), perturbed, batch)
        return c.reg_adv * -F.logsigmoid(x_pos - x_neg).mean()


def _fast_gradient(g: torch.Tensor, eps: float) -> torch.Tensor:
    """eps * g / |g| row by row (a 1-d g: element by element); rows with zero gradient stay."""
    g = g.detach()
    norm = g.norm(dim=1, keepdim=True) if g.dim() == 2 else g.abs()
    return eps * g / norm.clamp(min=1e-12)
