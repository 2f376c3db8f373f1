import lightning as L
from tqdm import tqdm


class Progress(L.Callback):
    """One bar over the samples of all ranks, drawn by rank zero (ranks run in step, so rank zero's batches
    times the world size estimate the whole), with rate and ETA."""

    def __init__(self, total, resumed=0):
        self.total, self.resumed = total, resumed
        self.bar = None

    def on_predict_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.bar = tqdm(total=self.total, initial=self.resumed, desc="generating", unit="img",
                            dynamic_ncols=True, smoothing=0.1)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.bar is not None:
            self.bar.update(min(len(batch) * trainer.world_size, self.total - self.bar.n))

    def on_predict_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer, pl_module, exception):
        self.on_predict_end(trainer, pl_module)  # the error's line starts on a line of its own
