"""MMSSLTrainer: per batch one discriminator step (Adam), then one recommender step (AdamW).

Spec §11.3. Both modules stay in training mode. The recommender's gradients never reach the
discriminator's parameters: the discriminator is frozen during the recommender step (the
reference computes those gradients and throws them away).
"""

import random

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_mmssl.compat import CheckpointMixin

LOSS_NAMES = ("bpr", "emb_reg", "feat_reg", "contrastive", "generator", "discriminator")


class MMSSLTrainer(CheckpointMixin, Trainer):
    """Alternating adversarial trainer for :class:`recbole_mmssl.model.mmssl.MMSSL`.

    Every epoch reseeds the random generators from (seed, epoch), so a run resumed from a
    checkpoint continues exactly as the uninterrupted run would have.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.optimizer = self._build_optimizer(params=model.recommender_parameters())
        self.d_optimizer = torch.optim.Adam(
            model.discriminator.parameters(), lr=config["d_learning_rate"], betas=tuple(config["d_betas"]))
        self.seed = config["seed"]

    def _reseed(self, epoch_idx):
        seed = int(np.random.SeedSequence([self.seed, epoch_idx]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _discriminator_step(self, interaction):
        loss = self.model.discriminator_loss(interaction)
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.d_optimizer.step()
        return loss.detach()

    def _recommender_step(self, interaction):
        self.model.discriminator.requires_grad_(False)
        try:
            losses = self.model.calculate_loss(interaction)
        finally:
            self.model.discriminator.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        sum(losses).backward()
        self.optimizer.step()
        return [loss.detach() for loss in losses]

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._reseed(epoch_idx)
        self.model.train()
        self.model.modality_graph.start_epoch()
        batches = tqdm(train_data, total=len(train_data), ncols=100,
                       desc=set_color(f"Train {epoch_idx:>5}", "pink")) if show_progress else train_data
        totals = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
        for batch_idx, interaction in enumerate(batches):
            interaction = interaction.to(self.device)
            d_loss = self._discriminator_step(interaction) if self.model.use_adversarial else None
            losses = self._recommender_step(interaction)
            losses.append(d_loss if d_loss is not None else torch.zeros((), device=self.device))
            values = torch.stack(losses).double().cpu()
            self._check_finite(values, epoch_idx, batch_idx)
            totals += values
        return tuple(totals.tolist())

    def _check_finite(self, values, epoch_idx, batch_idx):
        bad = [name for name, v in zip(LOSS_NAMES, values.tolist()) if not np.isfinite(v)]
        if bad:
            raise ValueError(
                f"MMSSL loss {', '.join(bad)} is not finite at epoch {epoch_idx}, batch {batch_idx}; "
                "training stopped. Lower learning_rate or d_learning_rate, or check the item features.")

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        parts = ", ".join(f"{name}: {value:.4f}" for name, value in zip(LOSS_NAMES, losses))
        return (set_color(f"epoch {epoch_idx} training", "green") + " [" + set_color("time", "blue")
                + f": {e_time - s_time:.2f}s, {parts}]")

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        for name, value in zip(LOSS_NAMES, losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
        self.tensorboard.add_scalar(f"{tag}/recommender", sum(losses[:-1]), epoch_idx)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "discriminator_optimizer": self.d_optimizer.state_dict(),
        }
        torch.save(state, saved_model_file, pickle_protocol=4)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _restore_state(self, checkpoint):
        super()._restore_state(checkpoint)
        self.d_optimizer.load_state_dict(checkpoint["discriminator_optimizer"])
