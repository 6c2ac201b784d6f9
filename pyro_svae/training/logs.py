"""Experiment logs beside metrics.csv (always written): TensorBoard or MLflow, each an optional
extra. Scalars at every progress interval (train/...) and validation (val/...), the configuration
as hyperparameters, and a few sentences decoded from the prior as text at each validation.

    train --log tensorboard   ->  RUN/tensorboard/ (tensorboard --logdir RUN/tensorboard)
    train --log mlflow        ->  RUN/mlflow.db and RUN/mlartifacts/ (mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db)

A resumed run (train --resume) appends to the same TensorBoard folder and the same MLflow run."""

import logging
import os
import pathlib
import time

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
    """An MLflow run in a SQLite store of the run's own (MLflow's local backend; its file store is
    deprecated), its artifacts (the decoded samples) under RUN/mlartifacts; the run's id is kept in
    RUN/mlflow-run-id so that a resumed training continues it."""

    def __init__(self, out_dir):
        import mlflow

        for name in ("mlflow", "alembic"):  # their INFO lines on creating the store would break the progress bar
            logging.getLogger(name).setLevel(logging.WARNING)
        self.mlflow = mlflow
        out_dir = os.path.abspath(out_dir)
        self.client = mlflow.tracking.MlflowClient(tracking_uri="sqlite:///" + os.path.join(out_dir, "mlflow.db"))
        id_file = os.path.join(out_dir, "mlflow-run-id")
        if os.path.isfile(id_file):
            self.run_id = open(id_file).read().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            name = os.path.basename(out_dir)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                name, artifact_location=pathlib.Path(out_dir, "mlartifacts").as_uri())
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            with open(id_file, "w") as f:
                f.write(self.run_id + "\n")

    def hparams(self, config):
        params = [self.mlflow.entities.Param(k, str(v)[:250]) for k, v in config.items()]
        logged = self.client.get_run(self.run_id).data.params  # a resumed run logs only what is new
        self.client.log_batch(self.run_id, params=[p for p in params if p.key not in logged])

    def scalars(self, step, values):
        stamp = int(time.time() * 1000)
        metrics = [self.mlflow.entities.Metric(tag.replace("/", "_"), float(v), stamp, step) for tag, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def text(self, step, tag, lines):
        self.client.log_text(self.run_id, "\n".join(lines), f"{tag}/step-{step:08d}.txt")

    def close(self):
        self.client.set_terminated(self.run_id)


def make_log(kind, out_dir):
    """The log of backend ``kind`` writing under ``out_dir`` (None for csv: metrics.csv alone)."""
    check_backend(kind)
    return {"tensorboard": TensorBoardLog, "mlflow": MLflowLog}[kind](out_dir) if kind in EXTRA else None
