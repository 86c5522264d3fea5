"""What every CTR model here shares: built from a FieldLayout, returns logits, regularisation."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from finalmlp.batch import Batch


class CTRModel(nn.Module):
    """Base class: ``forward(batch) -> logits (B, T)``, one column per task (T = 1 for one
    task); the loss lives in the trainer.

    A model that can learn several tasks at once sets ``multitask = True`` and takes
    ``num_tasks`` in its constructor (see :func:`finalmlp.models.build_model`).
    """

    multitask: ClassVar[bool] = False
    num_tasks: int = 1

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        """Extra training loss beside the trainer's BCE on ``logits`` (B, T) (e.g. FinalNet's
        self-distillation); called right after a training-mode ``forward``, so a model may use
        tensors it kept from that call. ``label`` is (B, T), NaN where missing. None (the
        default) adds nothing."""
        return None

    def regularization(
        self, embedding_l2: float, net_l2: float, batch_rows_only: bool = False
    ) -> torch.Tensor:
        """``l/2 * ||W||^2`` over whole embedding tables and over the network's weights/biases.

        As in the reference, embedding tables are penalised in full every step (not only the
        rows of the batch), and the network term covers every ``weight``/``bias`` of the other
        modules (Linear, BatchNorm, numeric embedding vectors). With ``batch_rows_only``
        (sparse embeddings) a table's penalty covers only the distinct rows the last training
        batch looked up (``FeatureEmbedding.batch_l2``), so its gradient stays sparse.
        """
        from finalmlp.models.layers import FeatureEmbedding

        total = torch.zeros((), device=self._device())
        for module in self.modules():
            if batch_rows_only and isinstance(module, FeatureEmbedding):
                rows_l2 = module.batch_l2()  # always: it also clears the recorded ids
                if embedding_l2 != 0:
                    total = total + (embedding_l2 / 2.0) * rows_l2
                continue
            is_table = isinstance(module, nn.Embedding)
            if is_table and batch_rows_only:
                continue
            factor = embedding_l2 if is_table else net_l2
            if factor == 0:
                continue
            for name, param in module.named_parameters(recurse=False):
                if name in ("weight", "bias") and param.requires_grad:
                    total = total + (factor / 2.0) * param.pow(2).sum()
        return total

    def _device(self) -> torch.device:
        return next(self.parameters()).device
