"""MMSSLTrainer: per batch one discriminator step (Adam), then one recommender step (AdamW).

As the released code does (docs/design.md, 'Training loop'). Both modules stay in training
mode. The recommender's gradients never reach the discriminator's parameters: the discriminator
is frozen during the recommender step (the reference computes those gradients and throws them
away). In distributed training
(:mod:`recbole_mmssl.common.distributed`) each rank trains on its share of every batch.
"""

import random

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_mmssl.common import distributed
from recbole_mmssl.trainer.resume import CheckpointMixin
from recbole_mmssl.trainer.curves import LearningCurveMixin
from recbole_mmssl.errors import InputError


class EpochHookMixin:
    """Before each training epoch, for every model: the random generators reseeded from (seed,
    epoch), the training loader's shuffling generator included, so that a run resumed from a
    checkpoint goes on exactly as the uninterrupted run would have; the learning rate
    ``learning_rate * a^(epoch / b)`` where ``learning_rate_decay`` is [a, b] (MMRec's per-epoch
    LambdaLR, computed from the epoch for the same reason); and the model's
    ``pre_epoch_processing()`` where it has one (LATTICE's graph rebuild, FREEDOM's edge pruning)."""

    def _epoch_seed(self, epoch_idx, *keys):
        return int(np.random.SeedSequence([self.config["seed"], epoch_idx, *keys]).generate_state(1)[0])

    def _reseed(self, epoch_idx, train_data):
        """Python's, NumPy's and torch's generators from (seed, epoch) (and the rank, in distributed
        training); the loader's own shuffling generator from (seed, epoch), the same on every rank."""
        seed = self._epoch_seed(epoch_idx, *([distributed.rank()] if distributed.active() else []))
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        generator = getattr(train_data, "generator", None)
        if generator is not None:
            generator.manual_seed(self._epoch_seed(epoch_idx))

    def _before_epoch(self, epoch_idx):
        decay = self.config["learning_rate_decay"]
        if decay:
            factor, period = decay
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate * factor ** (epoch_idx / period)
        hook = getattr(self.model, "pre_epoch_processing", None)
        if hook is not None:
            hook()

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._reseed(epoch_idx, train_data)
        self._before_epoch(epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)


LOSS_NAMES = ("bpr", "emb_reg", "feat_reg", "contrastive", "generator", "discriminator")


class MMSSLTrainer(EpochHookMixin, LearningCurveMixin, CheckpointMixin, Trainer):
    """Alternating adversarial trainer for :class:`recbole_mmssl.model.mmssl.MMSSL`.

    Every epoch reseeds the random generators from (seed, epoch), so a run resumed from a
    checkpoint continues exactly as the uninterrupted run would have. In distributed training
    the batches are drawn from (seed, epoch) on every rank, and the rest of the randomness
    (dropout, Gumbel noise, sampled columns) from (seed, epoch, rank). The exact discriminator's
    batch norm normalises over each rank's own rows; rank 0's running statistics are copied to
    the others after every epoch.
    """

    loss_names = LOSS_NAMES

    def __init__(self, config, model):
        super().__init__(config, model)
        self.optimizer = self._build_optimizer(params=model.recommender_parameters())
        self.d_optimizer = torch.optim.Adam(
            model.discriminator.parameters(), lr=config["d_learning_rate"], betas=tuple(config["d_betas"]))
        fp16 = config["mixed_precision"] == "fp16"  # float16 gradients need loss scaling; bfloat16's do not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        # the critic's own loss has O(1) gradients: no scaling needed to avoid underflow at the start
        self.d_scaler = torch.amp.GradScaler(self.device.type, init_scale=1.0, enabled=fp16)
        if distributed.active():
            distributed.broadcast([*model.parameters(), *model.buffers()])
            distributed.log_split(config["train_batch_size"])

    @staticmethod
    def _scaled_step(loss, optimizer, scaler):
        """Backward, the gradients summed over the ranks, and step; False where float16 loss
        scaling skipped the step on overflow."""
        scale = scaler.get_scale()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        distributed.sum_gradients([p for group in optimizer.param_groups for p in group["params"]])
        scaler.step(optimizer)
        scaler.update()
        return scaler.get_scale() >= scale

    def _discriminator_step(self, interaction, share=1.0):
        """One Adam step of the discriminator; returns (loss, whether the step was taken).

        ``share``: this rank's part of the batch, which weights its loss (1 in one process).
        """
        loss = self.model.discriminator_loss(interaction, grad_scale=self.d_scaler.get_scale()) * share
        return loss.detach(), self._scaled_step(loss, self.d_optimizer, self.d_scaler)

    def _recommender_step(self, interaction, share=1.0):
        """One AdamW step of the recommender; returns (loss parts, whether the step was taken)."""
        self.model.discriminator.requires_grad_(False)
        try:
            losses = [loss * share for loss in self.model.calculate_loss(interaction)]
        finally:
            self.model.discriminator.requires_grad_(True)
        taken = self._scaled_step(sum(losses), self.optimizer, self.scaler)
        return [loss.detach() for loss in losses], taken

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._reseed(epoch_idx, train_data)
        if distributed.active():  # every rank draws the same batches
            train_data.batch_generator = torch.Generator().manual_seed(self._epoch_seed(epoch_idx))
        self._before_epoch(epoch_idx)
        self.model.train()
        self.model.start_epoch()
        batches = tqdm(train_data, total=len(train_data), ncols=100,
                       desc=set_color(f"Train {epoch_idx:>5}", "pink")) if show_progress else train_data
        totals = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
        skipped = {"discriminator": 0, "recommender": 0}
        for batch_idx, interaction in enumerate(batches):
            share = 1.0
            if distributed.active():
                own = distributed.shard(len(interaction))
                share = (own.stop - own.start) / len(interaction)
                interaction = interaction[own]
            interaction = interaction.to(self.device)
            d_loss, d_taken = torch.zeros((), device=self.device), True
            if self.model.use_adversarial:
                d_loss, d_taken = self._discriminator_step(interaction, share)
            losses, taken = self._recommender_step(interaction, share)
            skipped["discriminator"] += not d_taken
            skipped["recommender"] += not taken
            values = torch.stack(losses + [d_loss if d_taken else torch.zeros_like(d_loss)]).double().cpu()
            values = distributed.sum_over_ranks(values)
            if taken:
                self._check_finite(values, epoch_idx, batch_idx)
            totals += values.nan_to_num(0.0, 0.0, 0.0)
        self.model.end_epoch()
        distributed.broadcast(list(self.model.discriminator.buffers()))
        self._report_skipped(epoch_idx, skipped)
        return tuple(totals.tolist())

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; in distributed training only rank 0 writes checkpoints."""
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved and distributed.is_main(),
                           show_progress=show_progress, callback_fn=callback_fn)

    def _valid_epoch(self, valid_data, show_progress=False):
        """Rank 0 evaluates; every rank takes its result, so all make the same early-stopping choice."""
        result = super()._valid_epoch(valid_data, show_progress=show_progress) if distributed.is_main() else None
        return distributed.broadcast_object(result)

    def write_curve(self):
        return super().write_curve() if distributed.is_main() else None

    def _report_skipped(self, epoch_idx, skipped):
        """float16 loss scaling skips a step on overflow and halves its scale; say so, and stop if it never fits."""
        if not any(skipped.values()):
            return
        self.logger.info(f"epoch {epoch_idx}: float16 loss scaling skipped steps on overflow: {skipped}")
        if min(self.scaler.get_scale(), self.d_scaler.get_scale()) < 2.0 ** -14:
            raise InputError("float16 gradients overflow at every loss scale; use mixed_precision: bf16 or float32.")

    def _check_finite(self, values, epoch_idx, batch_idx):
        bad = [name for name, v in zip(LOSS_NAMES, values.tolist()) if not np.isfinite(v)]
        if bad:
            raise InputError(
                f"MMSSL loss {', '.join(bad)} is not finite at epoch {epoch_idx}, batch {batch_idx}; "
                "training stopped. Lower learning_rate or d_learning_rate, or check the item features.")

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        for name, value in zip(LOSS_NAMES, losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
        self.tensorboard.add_scalar(f"{tag}/recommender", sum(losses[:-1]), epoch_idx)

    def _checkpoint_state(self, epoch, best_valid_result=None, best_epoch=None):
        return {
            **super()._checkpoint_state(epoch, best_valid_result, best_epoch),
            "discriminator_optimizer": self.d_optimizer.state_dict(),
            "scalers": (self.scaler.state_dict(), self.d_scaler.state_dict()),
        }

    def _restore_state(self, checkpoint):
        super()._restore_state(checkpoint)
        self.d_optimizer.load_state_dict(checkpoint["discriminator_optimizer"])
        for scaler, state in zip((self.scaler, self.d_scaler), checkpoint["scalers"]):
            scaler.load_state_dict(state)
