"""Resumable training for every model: the trainer mixin that writes the best and the last
epoch's checkpoints (in :mod:`recbole_mmssl.trainer.checkpoint`'s format) and continues a run
from either of them.
"""

import os

from recbole_mmssl.errors import InputError
from recbole_mmssl.trainer.checkpoint import (config_values, decode_other, encode_other, load_checkpoint, metrics,
                                              plain, save_checkpoint)


def load_resumable(resume_file, config):
    """The checkpoint at ``resume_file``, refused unless ``config``'s model wrote it."""
    checkpoint = load_checkpoint(resume_file, config["device"])
    if checkpoint["config"]["model"].lower() != config["model"].lower():
        raise InputError(f"Checkpoint {resume_file} was written by model {checkpoint['config']['model']}, "
                         f"not {config['model']}.")
    return checkpoint


class CheckpointMixin:
    """Trainer mixin that writes and reloads checkpoints of :mod:`recbole_mmssl.trainer.checkpoint`'s format
    (they open with ``weights_only=True``) and makes runs resumable.

    Beside RecBole's fields a checkpoint keeps the best validation result so far and its epoch.
    With ``saved`` the trainer also writes, after every evaluated epoch, the state of that epoch
    to :attr:`last_checkpoint_file` (``<best file>-last.pth``), so an interrupted run continues
    from its last finished epoch, not only from its best one; a run that ends removes it.
    """

    _last_valid_result = None
    _stopped = False
    best_epoch = None

    def __init__(self, config, model):
        # RecBole checks for the folder, then creates it: ranks started together race between the two
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        super().__init__(config, model)

    @property
    def last_checkpoint_file(self):
        return self.saved_model_file[:-len(".pth")] + "-last.pth"

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._last_valid_result = valid_result
        return valid_score, valid_result

    def _checkpoint_state(self, epoch, best_valid_result=None, best_epoch=None):
        """What a checkpoint holds; subclasses add their parts (and restore them in ``_restore_state``).

        The best result and epoch default to this epoch's: a checkpoint of the best epoch.
        """
        return {
            "config": config_values(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": plain(self.best_valid_score, "best_valid_score"),
            "best_valid_result": metrics(self._last_valid_result if best_valid_result is None else best_valid_result),
            "best_epoch": epoch if best_epoch is None else best_epoch,
            "best_model_file": self.saved_model_file,
            "stopped": self.cur_step > self.stopping_step,
            "state_dict": self.model.state_dict(),
            "other_parameter": encode_other(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        self.best_epoch = epoch
        save_checkpoint(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")

    def _save_last_checkpoint(self, epoch):
        state = self._checkpoint_state(epoch, best_valid_result=self.best_valid_result, best_epoch=self.best_epoch)
        save_checkpoint(state, self.last_checkpoint_file)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``; with ``saved``, the last-epoch checkpoint after every evaluated epoch,
        removed again when training ends. Early stopping marks the best checkpoint stopped: a run
        resumed after it had stopped early returns its best result without training."""
        if self._stopped or (self.start_epoch > 0 and self.start_epoch >= self.epochs):
            self.eval_collector.data_collect(train_data)  # as RecBole's fit does, for later evaluations
            return self.best_valid_score, self.best_valid_result

        def after_epoch(epoch, valid_score):
            if saved:
                self._save_last_checkpoint(epoch)
            if callback_fn:
                callback_fn(epoch, valid_score)

        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=after_epoch)
        if saved and self.cur_step > self.stopping_step and os.path.isfile(self.saved_model_file):
            best = load_checkpoint(self.saved_model_file)
            best["stopped"] = True
            save_checkpoint(best, self.saved_model_file)
        if saved and os.path.exists(self.last_checkpoint_file):
            os.remove(self.last_checkpoint_file)
        return result

    def resume_checkpoint(self, resume_file, checkpoint=None):
        """Restore model, optimizers and progress from ``resume_file`` to continue training.

        ``resume_file`` is a run's last-epoch checkpoint (``-last.pth``; the run goes on from the
        epoch after it) or its best checkpoint (the run goes on from the epoch after the best).
        The best checkpoint is the one beside a last-epoch checkpoint, where there is one, so that
        a run folder resumed after being copied never writes into the folder it was copied from.
        ``checkpoint``: the file's content where the caller has already loaded it
        (:func:`load_resumable`).
        """
        resume_file = str(resume_file)
        checkpoint = checkpoint or load_resumable(resume_file, self.config)
        best_file = checkpoint.get("best_model_file")
        beside = resume_file[:-len("-last.pth")] + ".pth" if resume_file.endswith("-last.pth") else None
        if beside and os.path.isfile(beside):
            best_file = beside  # the run's own folder, also where it was copied or moved to since
        elif not best_file or not os.path.isfile(best_file) or os.path.samefile(best_file, resume_file):
            best_file = resume_file
        self.saved_model_file = best_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.best_epoch = checkpoint.get("best_epoch", checkpoint["epoch"])
        self._stopped = checkpoint.get("stopped", False)
        self._restore_state(checkpoint)
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")

    def _restore_state(self, checkpoint):
        """Load everything a resumed run needs from ``checkpoint``; subclasses add their parts."""
        self.model.load_state_dict(checkpoint["state_dict"])
        decode_other(self.model, checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's ``evaluate``, with the best checkpoint reloaded in this package's format."""
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            decode_other(self.model, checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(
            eval_data, load_best_model=False, model_file=None, show_progress=show_progress
        )
