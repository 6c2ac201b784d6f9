"""The explorer of a --prior chain run: each sentence placed in its document, a document drawn as a
path on the map (the API, and the page in headless Chromium)."""

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install -e '.[web]')")
from fastapi.testclient import TestClient  # noqa: E402

from pyro_svae.app.explorer import create_app  # noqa: E402
from pyro_svae.training.run import train  # noqa: E402

from conftest import explorer_in_chromium, quiet  # noqa: E402
from test_document_runs import doc_config, document_corpus  # noqa: E402

STORY = "ann went to the lake . ann swam far . then ann went home ."


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    run = str(root / "chain")
    train(doc_config(document_corpus(root / "corpus"), max_steps=20), run, log=quiet, progress=False)
    return run


def test_the_map_places_each_sentence_in_its_document(chain_run):
    from pyro_svae import load

    client = TestClient(create_app(chain_run, map_size=30, device="cpu"))
    assert client.get("/api/info").json()["documents"] is True
    m = client.get("/api/map").json()
    assert len(m["points"]) == len(m["documents"]) == 30
    assert m["documents"] == sorted(m["documents"]) and m["documents"][0] == 0  # documents in order, whole
    vae = load(chain_run, device="cpu")
    data = vae.document_split("valid")
    first = data.document(0)
    assert m["texts"][: len(first)] == [vae.tokenizer.decode(s) for s in first]
    assert m["documents"][: len(first) + 1] == [0] * len(first) + [1]
    samples = client.post("/api/sample", json={"n": 3, "seed": 2}).json()["samples"]
    assert len(samples) == 3 and all(len(r["xy"]) == 2 for r in samples)  # one document of 3: a path
    post = client.post("/api/posterior", json={"sentence": STORY, "n": 2}).json()
    assert len(post["samples"]) == 6 and post["kl"] > 0  # 2 draws of each of its 3 sentences


def test_a_document_is_a_path_on_the_map_in_headless_chromium(chain_run):
    with explorer_in_chromium(chain_run, 30) as (driver, wait):
        from selenium.webdriver.common.by import By

        points = driver.find_elements(By.CSS_SELECTOR, "#map-plot circle.point")
        assert len(points) == 30
        m = TestClient(create_app(chain_run, map_size=30, device="cpu")).get("/api/map").json()
        i = m["documents"].index(1)  # the first sentence of the second document
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click'))", points[i])
        path = driver.find_elements(By.CSS_SELECTOR, "#path-layer circle")
        assert len(path) == m["documents"].count(1)  # its document's sentences, in order
        driver.find_element(By.CSS_SELECTOR, "[data-tab=prior]").click()
        n = driver.find_element(By.ID, "sample-n")
        n.clear()
        n.send_keys("4")
        driver.find_element(By.CSS_SELECTOR, "#sample-form button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sample-out li")) == 4)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#path-layer circle")) == 4  # the drawn document
        assert not driver.find_element(By.ID, "error").is_displayed()
