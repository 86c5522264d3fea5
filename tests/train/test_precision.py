"""train.precision: bf16 autocasts the training forward (weights and optimizer stay fp32)."""

from __future__ import annotations

import math

import torch

from conftest import random_batch
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.schema import FinalMLPConfig, TrainConfig
from finalmlp.train.trainer import Trainer


def test_bf16_steps_run_in_bfloat16_and_keep_fp32_weights(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(
        layout,
        FinalMLPConfig(
            embedding_dim=4, mlp1={"hidden_units": [16]}, mlp2={"hidden_units": [16]}, num_heads=2
        ),
    )
    trainer = Trainer(model, TrainConfig(precision="bf16"))
    seen: list[torch.dtype] = []
    hook = model.mlp1.layers[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    batch = random_batch(layout, size=32)
    model.train()
    loss = trainer._train_step(batch, batch.size)
    hook.remove()
    assert seen == [torch.bfloat16]  # the Linear ran under autocast
    assert math.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.eval()
    assert model(batch).dtype == torch.float32  # evaluation is not autocast
