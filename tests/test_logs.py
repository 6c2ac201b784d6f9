"""Experiment logs: TensorBoard's event file and MLflow's store hold what metrics.csv holds; a
missing backend is a one-line error naming its extra."""

import csv
import sys

import pytest


def test_tensorboard_holds_every_validation_elbo(corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pyro_svae import train

    from conftest import quiet, tiny_config

    out = tmp_path / "run"
    train(tiny_config(corpus, max_steps=40, eval_every=20, log="tensorboard"), str(out), log=quiet, progress=False)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    logged = [(e.step, e.value) for e in events.Scalars("val/elbo")]
    assert [s for s, _ in logged] == [int(r["step"]) for r in rows] == [20, 40]
    assert [v for _, v in logged] == pytest.approx([float(r["val_elbo"]) for r in rows], abs=1e-3)
    train_steps = [e.step for e in events.Scalars("train/loss")]
    assert train_steps == [1, 20, 40] and len(events.Scalars("train/kl")) == 3
    assert [e.step for e in events.Tensors("samples/text_summary")] == [20, 40]


def test_mlflow_holds_every_validation_elbo_and_a_resumed_run_continues_it(corpus, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from pyro_svae import train

    from conftest import quiet, tiny_config

    out = tmp_path / "run"
    train(tiny_config(corpus, max_steps=20, eval_every=10, log="mlflow"), str(out), log=quiet, progress=False)
    train(out_dir=str(out), resume=True, overrides={"max_steps": 30}, log=quiet, progress=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])
    assert run.info.run_id == (out / "mlflow-run-id").read_text().strip() and run.info.status == "FINISHED"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_elbo")]
    assert [s for s, _ in logged] == [int(r["step"]) for r in rows] == [10, 20, 30]
    assert [v for _, v in logged] == pytest.approx([float(r["val_elbo"]) for r in rows], abs=1e-3)
    assert run.data.params["z_dim"] == "4" and run.data.params["max_steps"] == "20"  # the first config
    samples = sorted(a.path for a in client.list_artifacts(run.info.run_id, "samples"))
    assert samples == [f"samples/step-{s:08d}.txt" for s in (10, 20, 30)]
    assert run.info.artifact_uri.startswith((out / "mlartifacts").as_uri())  # in the run, not the working folder


def test_a_missing_backend_is_a_one_line_error_naming_its_extra(corpus, tmp_path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    code, _, err = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--log", "mlflow",
                           "--max-steps", "1")
    assert code == 1 and err == "error: --log mlflow needs the mlflow package: pip install 'pyro-svae[mlflow]'\n"
    assert not (tmp_path / "run").exists()
