"""MMSSL's discriminator (paper Eq. 4) and its WGAN-GP losses (paper Eqs. 6-7).

The discriminator scores a user's relation row over all I items. It is always used in
training mode (batch statistics, dropout on), as the reference code does.
"""

import torch
from torch import nn

from recbole_mmssl.errors import InputError

GP_SCALE = 0.3  # the reference multiplies its gradient penalty by this constant, then by gp_weight


class Discriminator(nn.Module):
    """I -> I/4 -> I/8 -> 1 MLP; each block Linear, LeakyReLU, BatchNorm, Dropout; output scale * sigmoid.

    The reference builds its LeakyReLU with slope 1.0 (the identity); ``negative_slope``
    exposes that choice. ``dtype`` (torch.bfloat16 or torch.float16) runs the layers, the
    dominant cost, under autocast in that precision.
    """

    def __init__(self, n_items, dropout=(0.31, 0.5), negative_slope=1.0, output_scale=100.0, dtype=None):
        super().__init__()
        hidden1, hidden2 = n_items // 4, n_items // 8
        if hidden2 < 1:
            raise InputError(f"The discriminator needs at least 8 items, not {n_items}.")
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
        self.dtype = dtype
        for module in self.layers:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def precision(self, device):
        """The autocast region of the chosen precision; wrap a whole step in it so that the
        weights are cast once per step, not once per call."""
        return torch.autocast(device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def forward(self, rows):
        with self.precision(rows.device):
            logits = self.layers(rows)
        return self.output_scale * torch.sigmoid(logits.float()).squeeze(-1)


def gradient_penalty(discriminator, real, fake, grad_scale=1.0):
    """GP_SCALE * mean over rows of (||d D(x_hat) / d x_hat|| - 1)^2, x_hat between real and fake.

    ``grad_scale``: a float16 loss scale applied to the inner gradient and removed again, so that
    it does not underflow (PyTorch's recipe for gradient penalties under a GradScaler).
    """
    alpha = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    mixed = torch.lerp(fake, real, alpha).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum() * grad_scale, mixed, create_graph=True)
    grad = grad / grad_scale
    return GP_SCALE * ((grad.norm(2, dim=1) - 1) ** 2).mean()


def discriminator_loss(discriminator, real, fake, gp_weight, grad_scale=1.0):
    """WGAN-GP critic loss: -mean D(real) + mean D(fake) + gp_weight * penalty (inputs detached)."""
    real, fake = real.detach(), fake.detach()
    with discriminator.precision(real.device):
        fake_score = discriminator(fake).mean()
        real_score = discriminator(real).mean()
        return -real_score + fake_score + gp_weight * gradient_penalty(discriminator, real, fake, grad_scale)


def generator_loss(discriminator, fake):
    """-mean D(fake): pushes the modality relation rows towards what D scores as real."""
    with discriminator.precision(fake.device):
        return -discriminator(fake).mean()
