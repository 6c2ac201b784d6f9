"""Model folders: export then load gives the same model; bad folders are one-line errors."""

import json
import sys
import types

import pyro
import pytest
import torch

from pyro_svae import load


@pytest.fixture(scope="module")
def folder(trained_run, tmp_path_factory):
    from pyro_svae.app.export import export

    out = tmp_path_factory.mktemp("export") / "model"
    export(trained_run, str(out))
    return out


def _copy(folder, tmp_path):
    import shutil

    shutil.copytree(folder, tmp_path / "copy")
    return tmp_path / "copy"


def test_export_then_load_gives_the_same_parameters_and_samples(trained_run, folder):
    run, exported = load(trained_run, device="cpu"), load(str(folder), device="cpu")
    a, b = run.svae.state_dict(), exported.svae.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pyro.set_rng_seed(3)
    first = run.sample(8, strategy="sample")
    pyro.set_rng_seed(3)
    second = exported.sample(8, strategy="sample")
    assert first[1] == second[1] and torch.equal(first[0], second[0])
    assert exported.tokenizer.vocab == run.tokenizer.vocab and exported.max_len == run.max_len


def test_the_model_card_carries_the_runs_metrics(trained_run, folder):
    import csv

    state = torch.load(f"{trained_run}/best.pt", weights_only=True)
    row = [r for r in csv.DictReader(open(f"{trained_run}/metrics.csv")) if int(r["step"]) == state["position"]["step"]][0]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pyro-svae\n")
    assert f"- name: val_elbo\n  value: {float(row['val_elbo'])}\n" in card
    assert "python cli.py train" in card and "pyro_svae.load(" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["metrics"]["validation"]["val_elbo"] == float(row["val_elbo"])


def test_another_format_version_is_a_one_line_error(folder, tmp_path, run_cli):
    copy = _copy(folder, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    code, out, err = run_cli("sample", str(copy), "-n", "2")
    assert code == 1 and err.count("\n") == 1 and "version 99" in err and err.startswith("error: ")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_weights_file_is_a_one_line_error(folder, tmp_path, run_cli, damage):
    copy = _copy(folder, tmp_path)
    data = bytearray((copy / "model.safetensors").read_bytes())
    if damage == "flip":
        data[-5] ^= 0x40  # a bit of a weight: the header still parses
    else:
        data = data[: len(data) // 2]
    (copy / "model.safetensors").write_bytes(bytes(data))
    code, out, err = run_cli("reconstruct", str(copy), "the cat sat")
    assert code == 1 and err.count("\n") == 1 and "model.safetensors: damaged" in err


def test_a_hub_id_resolves_through_huggingface_hub(folder, monkeypatch):
    asked = []

    def snapshot_download(repo_id):
        asked.append(repo_id)
        return str(folder)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    vae = load("someone/toy-vae", device="cpu")
    assert asked == ["someone/toy-vae"] and vae.z_dim == load(str(folder), device="cpu").z_dim


def test_cli_export_writes_a_folder_that_commands_take(trained_run, tmp_path, run_cli):
    out = tmp_path / "m"
    code, _, err = run_cli("export", trained_run, str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    code, a, _ = run_cli("reconstruct", str(out), "the cat sat on the mat", "--json")
    code2, b, _ = run_cli("reconstruct", trained_run, "the cat sat on the mat", "--json")
    assert code == code2 == 0 and json.loads(a) == json.loads(b)
    code, _, err = run_cli("evaluate", str(out), "--split", "test")
    assert code == 1 and "holds no corpus" in err
