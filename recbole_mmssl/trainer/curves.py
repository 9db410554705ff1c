"""Learning curves: every training run writes one CSV row per epoch and, at its end, a PNG.

A row holds the epoch, the training seconds, every loss part, the validation seconds, the
validation score and every validation metric. The CSV lies beside the run's log file, named
after its checkpoint (``<checkpoint name>.epochs.csv``; beside the checkpoint where no log file
is written; ``epochs.csv`` in a compare run's or search trial's own folder), and is rewritten
after each epoch, so an interrupted run keeps its rows; checkpoints carry the rows too, so a
resumed run continues them.
"""

import csv
import logging
import os
from time import time

from recbole.utils import set_color

from recbole_mmssl.trainer.checkpoint import plain
from recbole_mmssl.common.files import atomic_path
from recbole_mmssl.common.plots import learning_curves


class LearningCurveMixin:
    """Trainer mixin that records each epoch; list it before :class:`CheckpointMixin`.

    ``loss_names`` names the parts of a tuple loss in the log, the CSV and the picture.
    """

    loss_names = None

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_records = []
        log_files = [h.baseFilename for h in logging.getLogger().handlers  # pytest adds one for os.devnull
                     if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]
        folder = os.path.dirname(log_files[0] if log_files else self.saved_model_file)
        # named after the checkpoint: unique per run, also where several runs share one log file
        self.curve_file = os.path.join(folder, os.path.basename(self.saved_model_file)[:-len(".pth")] + ".epochs.csv")

    def _loss_parts(self, losses):
        if not isinstance(losses, tuple):
            return {"total": float(losses)}
        names = self.loss_names or [f"loss_{k}" for k in range(len(losses))]
        return dict(zip(names, (float(v) for v in losses)))

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        parts = self._loss_parts(losses)
        self.epoch_records.append({"epoch": epoch_idx, "train_seconds": round(e_time - s_time, 3),
                                   **{f"loss/{k}": v for k, v in parts.items()}})
        if self.loss_names is None:
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        text = ", ".join(f"{name}: {value:.4f}" for name, value in parts.items())
        return (set_color(f"epoch {epoch_idx} training", "green") + " [" + set_color("time", "blue")
                + f": {e_time - s_time:.2f}s, {text}]")

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time()
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        if self.epoch_records:
            self.epoch_records[-1].update({"valid_seconds": round(time() - start, 3), "valid_score": valid_score,
                                           **{f"valid/{k}": v for k, v in valid_result.items()}})
        return valid_score, valid_result

    def write_curve(self):
        """The CSV of every recorded epoch (and nothing where none was recorded)."""
        if not self.epoch_records:
            return None
        columns = list(dict.fromkeys(key for row in self.epoch_records for key in row))
        os.makedirs(os.path.dirname(os.path.abspath(self.curve_file)), exist_ok=True)
        with atomic_path(self.curve_file) as partial, open(partial, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(self.epoch_records)
        return self.curve_file

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        def after_epoch(epoch, valid_score):
            self.write_curve()
            if callback_fn:
                callback_fn(epoch, valid_score)

        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=after_epoch)
        if self.write_curve():
            picture = learning_curves(self.curve_file, self.curve_file[:-len(".csv")] + ".png",
                                      f"{self.config['model']} on {self.config['dataset']}")
            if picture and verbose:
                self.logger.info(f"Learning curves: {self.curve_file}, {picture}")
        return result

    def _checkpoint_state(self, epoch, best_valid_result=None, best_epoch=None):
        return {**super()._checkpoint_state(epoch, best_valid_result, best_epoch),
                "epoch_records": plain(list(self.epoch_records), "epoch_records")}

    def _restore_state(self, checkpoint):
        super()._restore_state(checkpoint)
        self.epoch_records = [row for row in checkpoint.get("epoch_records", []) if row["epoch"] <= checkpoint["epoch"]]
