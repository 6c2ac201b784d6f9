"""Experiment logs beside metrics.csv (always written): TensorBoard or MLflow, each an optional
extra. Scalars at every progress interval (train/...) and validation (val/...), the configuration
as hyperparameters, and a few sentences decoded from the prior as text at each validation.

    train --log tensorboard   ->  RUN/tensorboard/ (tensorboard --logdir RUN/tensorboard)
    train --log mlflow        ->  RUN/mlruns/ (mlflow ui --backend-store-uri RUN/mlruns)"""

import os

from ..errors import SVAEError

BACKENDS = ("csv", "tensorboard", "mlflow")
EXTRA = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}  # module, extra


def check_backend(kind):
    """A one-line SVAEError, before any work, when the backend's package is missing."""
    if kind not in EXTRA:
        return
    module, extra = EXTRA[kind]
    try:
        __import__(module)
    except ImportError:
        raise SVAEError(f"--log {kind} needs the {module} package: pip install 'pyro-svae[{extra}]'") from None


class TensorBoardLog:
    def __init__(self, out_dir):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(out_dir, "tensorboard"))

    def hparams(self, config):
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams({k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}, {}):
            self.writer.file_writer.add_summary(summary)

    def scalars(self, step, values):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, step, tag, lines):
        self.writer.add_text(tag, "\n\n".join(lines), step)

    def close(self):
        self.writer.close()


class MLflowLog:
    def __init__(self, out_dir):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri("file:" + os.path.abspath(os.path.join(out_dir, "mlruns")))
        mlflow.set_experiment(os.path.basename(os.path.abspath(out_dir)))
        self.run = mlflow.start_run()

    def hparams(self, config):
        self.mlflow.log_params({k: str(v)[:250] for k, v in config.items()})

    def scalars(self, step, values):
        self.mlflow.log_metrics({tag.replace("/", "_"): value for tag, value in values.items()}, step=step)

    def text(self, step, tag, lines):
        self.mlflow.log_text("\n".join(lines), f"{tag}/step-{step:08d}.txt")

    def close(self):
        self.mlflow.end_run()


def make_log(kind, out_dir):
    """The log of backend ``kind`` writing under ``out_dir`` (None for csv: metrics.csv alone)."""
    check_backend(kind)
    return {"tensorboard": TensorBoardLog, "mlflow": MLflowLog}[kind](out_dir) if kind in EXTRA else None
