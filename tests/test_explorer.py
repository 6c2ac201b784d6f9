"""cli.py serve: the JSON API (FastAPI's test client) and the page in a real headless Chromium."""

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install -e '.[web]')")
from fastapi.testclient import TestClient  # noqa: E402

from pyro_svae.app.explorer import LIMITS, create_app  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B = "the cat sat on the mat .", "my friend walked by the river ."
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def client(trained_run):
    return TestClient(create_app(trained_run, map_size=50, device="cpu"))


def test_info_map_and_metrics(client, trained_run):
    info = client.get("/api/info").json()
    assert info["z_dim"] == 4 and info["vocab_size"] > 4 and info["limits"] == LIMITS
    m = client.get("/api/map").json()
    assert len(m["points"]) == len(m["texts"]) == len(m["lengths"]) == 40  # the valid split has 40 sentences
    assert all(len(p) == 2 for p in m["points"])
    assert m["lengths"][0] == len(m["texts"][0].split())
    rows = client.get("/api/metrics").json()["rows"]
    assert [r["step"] for r in rows] == [100, 200, 300] and all(r["val_kl"] > 0 for r in rows)


def test_decoding_endpoints_mirror_the_python_api(client, trained_run):
    from pyro_svae import load

    vae = load(trained_run, device="cpu")
    path = client.post("/api/homotopy", json={"first": A, "second": B, "steps": 4}).json()["path"]
    assert [r["text"] for r in path] == vae.homotopy(A, B, steps=4)[1]
    # the path's ends lie where the two sentences' codes lie on the map
    codes = client.post("/api/encode", json={"sentences": [A, B]}).json()["codes"]
    assert path[0]["xy"] == pytest.approx(codes[0]["xy"], abs=1e-5) and path[-1]["xy"] == pytest.approx(codes[1]["xy"], abs=1e-5)
    assert len(codes[0]["mean"]) == len(codes[0]["std"]) == 4 and all(s > 0 for s in codes[0]["std"])
    post = client.post("/api/posterior", json={"sentence": A, "n": 3, "seed": 1}).json()
    assert len(post["samples"]) == 3 and post["kl"] == pytest.approx(float(vae.kl([A])[0]), rel=1e-4)
    assert post["reconstruction"]["text"] == vae.reconstruct([A])[1][0]
    again = client.post("/api/posterior", json={"sentence": A, "n": 3, "seed": 1}).json()
    assert again["samples"] == post["samples"]  # a request's seed makes it repeatable
    samples = client.post("/api/sample", json={"n": 4, "strategy": "sample", "temperature": 0.7, "top_k": 5}).json()
    assert len(samples["samples"]) == 4 and all(r["text"] for r in samples["samples"])
    reranked = client.post("/api/reconstruct", json={"sentences": [A, B], "strategy": "beam", "beam": 4, "rerank": True})
    assert [r["text"] for r in reranked.json()["reconstructions"]] == vae.reconstruct(
        [A, B], strategy="beam", beam=4, rerank=True)[1]
    rec = client.post("/api/reconstruct", json={"sentences": [A, "the cat sat on the zebra ."]}).json()
    assert len(rec["reconstructions"]) == 2 and rec["warnings"] == [
        "sentence 2: not in the vocabulary, read as <unk>: zebra"]


@pytest.mark.parametrize("path, body, status, message", [
    ("posterior", {"sentence": ""}, 400, "sentence 1 is empty"),
    ("posterior", {"sentence": "zebra giraffe"}, 400, "sentence 1 has only words outside the vocabulary"),
    ("homotopy", {"first": A, "second": B, "steps": 1}, 400, "--steps must be at least 2"),
    ("homotopy", {"first": A, "second": B, "steps": 21}, 400, "steps 21: must lie in [1, 20] for one request"),
    ("sample", {"n": 1000}, 400, "n 1000: must lie in [1, 20]"),
    ("sample", {"n": 2, "strategy": "beam", "beam": 50}, 400, "beam 50: must lie in [1, 10]"),
    ("sample", {"n": 2, "strategy": "sample", "temperature": 0}, 400, "--temperature 0.0: must be a positive number"),
    ("sample", {"n": 2, "rerank": True}, 400, "--rerank chooses among a beam's candidates: it goes with --decode beam"),
    ("sample", {"n": "many"}, 422, "n: Input should be a valid integer"),
    ("sample", {"strategy": "nucleus"}, 422, "strategy: Input should be 'greedy', 'sample' or 'beam'"),
    ("posterior", {"sentence": "a " * 300}, 400, "sentence 1 has 600 characters; at most 400"),
    ("homotopy", {"first": A}, 422, "second: Field required"),
])
def test_bad_input_is_a_4xx_with_the_one_line_message(client, path, body, status, message):
    response = client.post(f"/api/{path}", json=body)
    assert response.status_code == status and message in response.json()["detail"]
    assert "\n" not in response.json()["detail"]


def test_the_page_and_its_assets_are_local(client):
    page = client.get("/").text
    assert "/static/explorer.js" in page and "http" not in page.replace("http://www.w3.org", "")
    for asset in ("/static/explorer.js", "/static/explorer.css", "/swagger/swagger-ui-bundle.js"):
        assert client.get(asset).status_code == 200
    docs = client.get("/docs").text
    assert "/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert "/api/homotopy" in client.get("/openapi.json").json()["paths"]


# -- the page in a browser ---------------------------------------------------------------------

@pytest.fixture
def server(trained_run):
    """python cli.py serve RUN --port 0, and the address it printed."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "serve", trained_run, "--port", "0",
                             "--map-size", "50", "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("serving"), line + proc.stderr.read()
        yield line.split(" at ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def api(url, path, body):
    request = urllib.request.Request(url + "api/" + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="browser test skipped: no Chromium "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
def test_the_page_in_headless_chromium(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 60)
    texts = lambda css: [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]  # noqa: E731
    try:
        driver.get(server)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")
        points = driver.find_elements(By.CSS_SELECTOR, "#map-plot circle.point")
        assert len(points) == 40 and not driver.find_element(By.ID, "error").is_displayed()
        xy = [(float(p.get_attribute("cx")), float(p.get_attribute("cy"))) for p in points]
        alone = [p for p, (x, y) in zip(points, xy)  # points no other circle covers
                 if all((x - u) ** 2 + (y - v) ** 2 > 10 ** 2 for u, v in xy if (u, v) != (x, y))][:2]
        for point in alone:  # two clicks on the map fill the homotopy form
            webdriver.ActionChains(driver).move_to_element(point).click().perform()
        picked = [p.find_element(By.TAG_NAME, "title").get_attribute("textContent") for p in alone]
        assert len(picked) == 2
        assert [driver.find_element(By.ID, f).get_attribute("value") for f in ("first", "second")] == picked
        assert driver.find_element(By.ID, "hover").text == picked[1]

        driver.find_element(By.CSS_SELECTOR, "[data-tab=posterior]").click()
        box = driver.find_element(By.ID, "sentence")
        box.clear()
        box.send_keys(A)
        driver.find_element(By.ID, "run-posterior").click()
        wait.until(lambda d: texts("#posterior-out li"))
        expected = api(server, "posterior", {"sentence": A, "n": 5})
        assert texts("#posterior-out li") == [r["text"] for r in expected["samples"]]
        assert expected["reconstruction"]["text"] in driver.find_element(By.ID, "posterior-summary").text

        driver.find_element(By.CSS_SELECTOR, "[data-tab=homotopy]").click()
        for field, value in (("first", A), ("second", B)):
            driver.find_element(By.ID, field).clear()
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "run-homotopy").click()
        wait.until(lambda d: texts("#homotopy-out li"))
        expected = api(server, "homotopy", {"first": A, "second": B, "steps": 5})
        assert texts("#homotopy-out li") == [r["text"] for r in expected["path"]]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#path-layer circle")) == 5  # the path, on the map
        driver.save_screenshot(str(tmp_path / "homotopy.png"))

        driver.find_element(By.ID, "first").clear()  # bad input: the one-line message, in the page
        driver.find_element(By.ID, "run-homotopy").click()
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert driver.find_element(By.ID, "error").text == "error: sentence 1 is empty"
    finally:
        driver.quit()
    assert (tmp_path / "homotopy.png").stat().st_size > 10_000


def test_a_language_model_run_serves_samples_and_says_it_has_no_map(tmp_path):
    from conftest import quiet, tiny_config, write_corpus
    from pyro_svae import train

    train(tiny_config(write_corpus(tmp_path / "c"), model="lm", max_steps=5), str(tmp_path / "lm"), log=quiet,
          progress=False)
    client = TestClient(create_app(str(tmp_path / "lm"), device="cpu"))
    assert client.get("/api/info").json()["z_dim"] == 0
    samples = client.post("/api/sample", json={"n": 2}).json()["samples"]
    assert len(samples) == 2 and all(r["xy"] is None for r in samples)
    for response in (client.get("/api/map"), client.post("/api/posterior", json={"sentence": A})):
        assert response.status_code == 400 and response.json()["detail"] == "this run is a language model: it has no latent space"


class FakeUMAP:
    """Stands in for umap.UMAP: its "embedding" is the first two coordinates."""

    def __init__(self, n_components, n_neighbors, random_state):
        assert n_components == 2 and 1 <= n_neighbors <= 15

    def fit(self, x):
        self.embedding_ = x[:, :2] * 10
        return self

    def transform(self, x):
        return x[:, :2] * 10


def test_the_map_uses_umap_where_it_is_installed_and_pca_otherwise(trained_run, monkeypatch):
    import importlib.machinery
    import types

    import torch

    from pyro_svae import SVAEError, load

    vae = load(trained_run, device="cpu")
    means = vae.posterior_mean([vae.tokenizer.decode(vae.split("valid").sentence(i)) for i in range(30)])
    pca = vae.latent_map("valid", 30, method="auto")
    assert pca.method == "pca" and torch.allclose(pca.points, pca.project(means), atol=1e-5)
    centred = means.double().numpy() - means.double().numpy().mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # numpy's PCA: the first two right singular vectors
    expected = centred @ vt[:2].T
    signs = np.sign((expected * pca.points.double().numpy()).sum(0))  # each axis up to its sign
    assert np.allclose(pca.points.double().numpy() * signs, expected, atol=1e-4)
    with pytest.raises(SVAEError, match="projection umap needs umap-learn"):
        monkeypatch.setitem(sys.modules, "umap", None)
        vae.latent_map("valid", 30, method="umap")
    fake = types.ModuleType("umap")
    fake.UMAP, fake.__spec__ = FakeUMAP, importlib.machinery.ModuleSpec("umap", None)
    monkeypatch.setitem(sys.modules, "umap", fake)
    m = vae.latent_map("valid", 30)  # auto: umap, found
    assert m.method == "umap" and torch.allclose(m.points, means[:, :2] * 10, atol=1e-5)
    assert torch.allclose(m.project(means[:3]), means[:3, :2] * 10, atol=1e-5)
    assert TestClient(create_app(trained_run, map_size=30, device="cpu")).get("/api/map").json()["method"] == "umap"


def test_serve_warns_when_it_listens_beyond_this_machine_and_refuses_a_taken_port(trained_run, run_cli):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "serve", trained_run, "--host", "0.0.0.0",
                             "--port", "0", "--map-size", "10", "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    try:
        warning, serving = proc.stderr.readline(), proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert warning == "warning: listening on 0.0.0.0: anyone who can reach this machine can use the model\n"
    assert serving.startswith(f"serving {trained_run} at http://127.0.0.1:")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = run_cli("serve", trained_run, "--port", str(port), "--map-size", "10", "--device", "cpu")
    assert code == 1 and err.strip() == (f"error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                                         "pick another --port (0: any free one)")


def test_serve_without_the_web_extra_says_what_to_install(trained_run, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    code, _, err = run_cli("serve", trained_run)
    assert code == 1 and err.strip() == "error: serve needs the web extra (uvicorn is missing): pip install -e '.[web]'"
