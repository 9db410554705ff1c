"""MMSSL's discriminator (spec §6) and its WGAN-GP losses (spec §7).

The discriminator scores a user's relation row over all I items. It is always used in
training mode (batch statistics, dropout on), as the reference code does.
"""

import torch
from torch import nn

GP_SCALE = 0.3  # the reference multiplies its gradient penalty by this constant, then by gp_weight


class Discriminator(nn.Module):
    """I -> I/4 -> I/8 -> 1 MLP; each block Linear, LeakyReLU, BatchNorm, Dropout; output scale * sigmoid.

    The reference builds its LeakyReLU with slope 1.0 (the identity); ``negative_slope``
    exposes that choice. ``bf16`` runs the layers under bfloat16 autocast (the dominant cost).
    """

    def __init__(self, n_items, dropout=(0.31, 0.5), negative_slope=1.0, output_scale=100.0, bf16=False):
        super().__init__()
        hidden1, hidden2 = n_items // 4, n_items // 8
        if hidden2 < 1:
            raise ValueError(f"The discriminator needs at least 8 items, not {n_items}.")
        self.layers = nn.Sequential(
            nn.Linear(n_items, hidden1),
            nn.LeakyReLU(negative_slope),
            nn.BatchNorm1d(hidden1),
            nn.Dropout(dropout[0]),
            nn.Linear(hidden1, hidden2),
            nn.LeakyReLU(negative_slope),
            nn.BatchNorm1d(hidden2),
            nn.Dropout(dropout[1]),
            nn.Linear(hidden2, 1),
        )
        self.output_scale = output_scale
        self.bf16 = bf16
        for module in self.layers:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def precision(self, device):
        """The autocast region of the chosen precision; wrap a whole step in it so that the
        weights are cast once per step, not once per call."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def forward(self, rows):
        with self.precision(rows.device):
            logits = self.layers(rows)
        return self.output_scale * torch.sigmoid(logits.float()).squeeze(-1)


def gradient_penalty(discriminator, real, fake):
    """GP_SCALE * mean over rows of (||d D(x_hat) / d x_hat|| - 1)^2, x_hat between real and fake."""
    alpha = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    mixed = torch.lerp(fake, real, alpha).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return GP_SCALE * ((grad.norm(2, dim=1) - 1) ** 2).mean()


def discriminator_loss(discriminator, real, fake, gp_weight):
    """WGAN-GP critic loss: -mean D(real) + mean D(fake) + gp_weight * penalty (inputs detached)."""
    real, fake = real.detach(), fake.detach()
    with discriminator.precision(real.device):
        fake_score = discriminator(fake).mean()
        real_score = discriminator(real).mean()
        return -real_score + fake_score + gp_weight * gradient_penalty(discriminator, real, fake)


def generator_loss(discriminator, fake):
    """-mean D(fake): pushes the modality relation rows towards what D scores as real."""
    with discriminator.precision(fake.device):
        return -discriminator(fake).mean()
