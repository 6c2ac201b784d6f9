"""Labels as causes of the sentence (--prior class, Kingma et al. 2014's M2): the labeled store,
the enumerated ELBO against a hand computation, training on a template corpus with 1% of its
sentences labeled, and the commands (sample --label, classify, transfer)."""

import json
import math
import os
import random
import sys

import pyro
import pytest
import torch
import torch.nn.functional as F

from pyro_svae.data.corpus import make_batch
from pyro_svae.data.store import StoreOptions, prepare_store
from pyro_svae.models.labeled import LabeledVAE
from pyro_svae.models.vae import ModelConfig
from pyro_svae.training.config import TrainConfig
from pyro_svae.training.labeled import LabeledELBO
from pyro_svae.training.run import train

from conftest import quiet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from templates import TEMPLATES, nmi  # noqa: E402

K = 3


@pytest.fixture
def m2():
    torch.manual_seed(0)
    pyro.clear_param_store()
    return LabeledVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3), classes=K, alpha=0.7).eval()


def log_likelihood(m, batch, z, y):
    """log p(x | z, y) [B] from the decoder's logits by log-softmax and gather (not the package's kernel)."""
    logits, _ = m.decoder(batch.inputs, torch.cat([z, F.one_hot(y, K).float()], -1))
    log_p = logits.log_softmax(-1).gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    return (log_p * (batch.targets != 0)).sum(-1)


def normal(z):
    return (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def bag(m, batch, z, y):
    """bow * sum_t log softmax(W [z, onehot(y)])[x_t] [B], by hand; 0 outside training or without the term."""
    if m.bow is None or not m.training:
        return 0.0
    log_p = m.bow(torch.cat([z, F.one_hot(y, K).float()], -1)).log_softmax(-1)
    return m.config.bow * torch.stack([log_p[i, batch.targets[i, :n]].sum() for i, n in enumerate(batch.lengths.tolist())])


def hand_elbo(m, batch, sizes, beta):
    """The ELBO of ``batch`` by hand, drawing z in the guide's order (labeled part, then the
    unlabeled part's draws for every class): labeled sentences give ELBO(x | y) + alpha log q(y|x),
    unlabeled ones sum_y q(y|x) [ELBO(x | y) - log q(y|x)], each part times its corpus / batch.
    A model in training with bow > 0 adds its bag-of-words term to ELBO(x | y)."""
    total = 0.0
    for part, rows in (("labeled", batch.labels >= 0), ("unlabeled", batch.labels < 0)):
        rows = rows.nonzero().flatten()
        if not len(rows):
            continue
        b = batch.select(rows)
        h = m.encoder(b.targets, b.lengths)
        log_q_y = m.classifier(h).log_softmax(-1)  # [B, K]
        scale = sizes[part] / b.size
        if part == "labeled":
            q = m.q_z(h, b.labels)
            z = q.rsample()
            elbo = (log_likelihood(m, b, z, b.labels) + beta * (normal(z) - q.log_prob(z)) + math.log(1 / K)
                    + m.alpha * log_q_y.gather(1, b.labels.unsqueeze(1)).squeeze(1) + bag(m, b, z, b.labels))
        else:
            ys = torch.arange(K).view(K, 1).expand(K, b.size)
            q = m.q_z(h, ys)  # batch [K, B]
            z = q.rsample()
            given = torch.stack([log_likelihood(m, b, z[k], ys[k]) + beta * (normal(z[k]) - q.log_prob(z)[k])
                                 + math.log(1 / K) + bag(m, b, z[k], ys[k]) for k in range(K)])  # [K, B]
            elbo = (log_q_y.exp().T * (given - log_q_y.T)).sum(0)
        total = total + scale * elbo.sum()
    return total


@pytest.mark.parametrize("labels, sizes", [([-1, -1, -1], {"unlabeled": 3}),
                                           ([2, 0, 1], {"labeled": 3}),
                                           ([1, -1, -1], {"labeled": 10, "unlabeled": 40})])
def test_enumerated_elbo_equals_the_hand_sum_over_classes(m2, labels, sizes):
    # unlabeled: y enumerated by TraceEnum_ELBO = sum_y q(y|x) (ELBO(x|y) - log q(y|x)); labeled:
    # ELBO(x|y) + alpha log q(y|x); a mixed batch: each part scaled to its share of the corpus
    batch = make_batch([[4, 5, 6], [7, 8], [9, 10, 11, 4]], labels=labels)
    pyro.set_rng_seed(3)
    loss = LabeledELBO().differentiable_loss(m2.model, m2.guide, batch, sizes=sizes, beta=0.4)
    pyro.set_rng_seed(3)
    expected = -hand_elbo(m2, batch, {"labeled": 0, "unlabeled": 0, **sizes}, beta=0.4)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_the_bag_of_words_term_is_summed_over_the_classes_in_training_only():
    # each class's code [z_y, onehot(y)] predicts the words: sum_y q(y|x) bow * BoW(x | z_y, y) for
    # an unlabeled sentence, bow * BoW(x | z, y) for a labeled one; evaluation leaves it out
    torch.manual_seed(0)
    pyro.clear_param_store()
    m = LabeledVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3, bow=1.5), classes=K, alpha=0.7)
    batch = make_batch([[4, 5, 6], [7, 8], [9, 10, 11, 4]], labels=[1, -1, -1])
    sizes = {"labeled": 10, "unlabeled": 40}
    losses = {}
    for mode in ("train", "eval"):
        getattr(m, mode)()
        pyro.set_rng_seed(3)
        losses[mode] = LabeledELBO().differentiable_loss(m.model, m.guide, batch, sizes=sizes, beta=0.4)
        pyro.set_rng_seed(3)
        assert float(losses[mode]) == pytest.approx(float(-hand_elbo(m, batch, sizes, beta=0.4)), rel=1e-5)
    assert float(losses["train"]) > float(losses["eval"]) + 10  # the term's log-probabilities are negative


@pytest.mark.parametrize("guide", ["lowrank:2", "fullrank", "iaf:1", "delta"])
def test_every_single_site_family_serves_as_q_z_given_x_and_y(guide):
    torch.manual_seed(0)
    pyro.clear_param_store()
    m = LabeledVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3, guide=guide), classes=K, alpha=0.7).eval()
    batch = make_batch([[4, 5, 6], [7, 8], [9, 10, 11, 4]], labels=[1, -1, -1])
    sizes = {"labeled": 10, "unlabeled": 40}
    pyro.set_rng_seed(3)
    loss = LabeledELBO().differentiable_loss(m.model, m.guide, batch, sizes=sizes, beta=0.4)
    pyro.set_rng_seed(3)
    assert float(loss) == pytest.approx(float(-hand_elbo(m, batch, sizes, beta=0.4)), rel=1e-5)
    pyro.set_rng_seed(3)
    floored = LabeledELBO(5.0).differentiable_loss(m.model, m.guide, batch, sizes=sizes, beta=0.4)
    assert float(floored) > float(loss)  # the total KL's floor, from the draw, adds its shortfall


def test_free_bits_floor_the_kl_of_z_averaged_over_the_classes(m2):
    batch = make_batch([[4, 5, 6], [7, 8], [9, 10, 11, 4]], labels=[1, -1, -1])
    sizes = {"labeled": 10, "unlabeled": 40}
    pyro.set_rng_seed(3)
    plain = LabeledELBO(0.0).differentiable_loss(m2.model, m2.guide, batch, sizes=sizes, beta=0.4)
    pyro.set_rng_seed(3)
    floored = LabeledELBO(5.0).differentiable_loss(m2.model, m2.guide, batch, sizes=sizes, beta=0.4)
    expected = 0.0
    for part, rows, size in (("labeled", [0], 10), ("unlabeled", [1, 2], 40)):
        b = batch.select(torch.tensor(rows))
        h = m2.encoder(b.targets, b.lengths)
        ys = b.labels.view(1, -1) if part == "labeled" else torch.arange(K).view(K, 1).expand(K, b.size)
        q = m2.q_z(h, ys).base_dist
        kl = 0.5 * (q.scale ** 2 + q.loc ** 2 - 1) - q.scale.log()  # [Y, B, Z]
        weights = torch.ones(1, b.size) if part == "labeled" else m2.classify(b).T
        units = (weights.unsqueeze(-1) * kl).sum(0).mean(0)  # E_q(y|x) KL per dimension, batch-averaged
        expected += 0.4 * size * (5.0 - units).clamp(min=0).sum()
    assert float(floored - plain) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) > 0


class Spread(torch.nn.Module):
    """A classifier whose logits spread the batch's encoder summaries apart: 40 (h - mean h) W."""

    def __init__(self, dim):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(dim, K, generator=torch.Generator().manual_seed(1)))

    def forward(self, h):
        return 40 * (h - h.mean(0)) @ self.w


def test_the_class_information_reward_adds_w_times_the_corpus_times_i_of_x_and_y(m2):
    # --class-info W: W * N_unlabeled * (H[mean_x q(y|x)] - mean_x H[q(y|x)]) over the unlabeled part only
    batch = make_batch([[4, 5, 6], [7, 8], [9, 10, 11, 4], [5, 5]], labels=[1, -1, -1, -1])
    sizes = {"labeled": 10, "unlabeled": 40}
    m2.classifier = Spread(m2.encoder.out_dim)  # q(y|x) far from uniform, and different per sentence
    pyro.set_rng_seed(3)
    plain = LabeledELBO().differentiable_loss(m2.model, m2.guide, batch, sizes=sizes, beta=0.4)
    pyro.set_rng_seed(3)
    rewarded = LabeledELBO().differentiable_loss(m2.model, m2.guide, batch, sizes=sizes, beta=0.4, info=2.5)
    p = m2.classifier(m2.encoder(batch.targets[1:], batch.lengths[1:])).softmax(-1)  # the unlabeled rows [3, K]
    entropy = lambda q: -(q * q.log()).sum(-1)  # noqa: E731
    information = entropy(p.mean(0)) - entropy(p).mean()
    assert float(information) > 0.1
    assert float(plain - rewarded) == pytest.approx(2.5 * 40 * float(information), rel=1e-5)


def test_labeled_store_keeps_labels_and_their_names(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("pos\ta good day\nneg\ta bad day\n\ta day\n?\tsome day\nno tab here\n"
                                      "neg\tfar too long a sentence for the limit\nneg\tbad\n")
    (corpus / "valid.txt").write_text("pos\tgood\nneg\tbad day\n")
    tokenizer, splits, info = prepare_store(str(corpus), str(tmp_path / "store"), StoreOptions(labels="tab", max_len=5),
                                            log=quiet, progress=False)
    assert info["labels"] == ["neg", "pos"]
    train = splits["train"]
    texts = [tokenizer.decode(train.sentence(i)) for i in range(len(train))]
    assert texts == ["a good day", "a bad day", "a day", "some day", "no tab here", "bad"]  # the long one dropped
    assert train.labels.tolist() == [1, 0, -1, -1, -1, 0]
    assert info["splits"]["train"]["label_counts"] == [2, 1] and info["splits"]["train"]["unlabeled"] == 3
    assert splits["valid"].labels.tolist() == [1, 0]


def template_corpus(folder, k=4, slots=2, labeled=0.01, seed=0):
    """train/valid/test from k templates (bench/templates.py's), LABEL<TAB>sentence; in train only the
    first ``labeled`` fraction keeps its label. -> folder."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", 1600), ("valid", 80), ("test", 80)):
        lines = []
        for i in range(n):
            t = rng.randrange(k)
            label = str(t) if split != "train" or i < n * labeled else ""
            lines.append(f"{label}\t" + TEMPLATES[t].format(f"s{t}x{rng.randrange(slots)}"))
        with open(os.path.join(folder, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return folder


def template_of(text):
    """The template a sentence was written from (its slot word one of that template's), or None."""
    words = text.split()
    for t, template in enumerate(TEMPLATES):
        pattern = template.split()
        if len(words) == len(pattern) and all(w == p or (p == "{}" and w.startswith(f"s{t}x"))
                                              for w, p in zip(words, pattern)):
            return t
    return None


M2 = dict(labels="tab", prior="class", z_dim=2, hidden=64, emb_dim=32, batch_size=32, lr=3e-3, dropout=0.0,
          patience=0, eval_every=100, kl_schedule="linear:0,300", free_bits=0.0, word_keep=0.5, max_steps=600,
          alpha=50.0, bidirectional=False, skip=False, bow=0.0, device="cpu", ema=0.0)


@pytest.fixture(scope="module")
def m2_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2")
    data = template_corpus(str(root / "corpus"))
    runs = []
    for seed in range(4):
        pyro.clear_param_store()
        run = str(root / f"run{seed}")
        train(TrainConfig(data=data, seed=seed, **M2), run, log=quiet, progress=False)
        runs.append(run)
    return runs


def test_one_percent_of_labels_teach_the_classifier_every_template(m2_runs):
    import pyro_svae
    from pyro_svae.data.corpus import gather
    from pyro_svae.training.rundir import load_corpus

    for run in m2_runs:  # 16 of 1,600 training sentences labeled; 4 seeds
        vae = pyro_svae.load(run, device="cpu")
        test = load_corpus(run)["test"]
        batch = gather(test, list(range(len(test))))
        with torch.no_grad():
            guess = vae.svae.classify(batch).argmax(-1)
        accuracy = float((guess == batch.labels).float().mean())
        assert accuracy >= 0.95, (run, accuracy)


def test_em_on_a_mixture_of_unigrams_finds_the_word_clusters_and_keeps_the_known_labels():
    from pyro_svae.inference.unigrams import bag_counts, fit

    # two clusters of words ({4, 5, 6} and {7, 8, 9}), each sentence drawn from one
    rng = random.Random(0)
    cluster = [rng.randrange(2) for _ in range(60)]
    tokens = torch.tensor([[rng.choice([4, 5, 6] if c == 0 else [7, 8, 9]) for _ in range(5)] + [3, 0]
                           for c in cluster])
    counts = bag_counts(tokens, 10)
    assert counts.to_dense()[0].sum() == 5 and counts.to_dense()[:, :4].sum() == 0  # </s> and padding left out
    r, ll = fit(counts, 2, seed=0)
    found = r.argmax(-1).tolist()
    assert found == cluster or found == [1 - c for c in cluster]
    assert r.max(-1).values.min() > 0.99
    # with class ids known for two sentences, the classes take those ids, and the known rows stay one-hot
    labels = torch.full((60,), -1)
    labels[0], labels[1] = 1 - cluster[0], 1 - cluster[1]  # against the word clusters' natural order
    r, _ = fit(counts, 2, labels, seed=0)
    assert r[0, 1 - cluster[0]] == 1.0 and r[1, 1 - cluster[1]] == 1.0
    assert r.argmax(-1).tolist() == [1 - c for c in cluster]
    # the log-likelihood per sentence: two equally likely classes of three equally likely words
    assert ll == pytest.approx(5 * math.log(1 / 3) + math.log(1 / 2), abs=0.05)


@pytest.fixture(scope="module")
def unsupervised_runs(tmp_path_factory):
    """M2 without any label (class:4) on the template corpus, q(y|x) started by --class-init and the
    KL weight 1 from the start (annealed, z is free early and q(y|x) drifts to uniform); 4 seeds."""
    root = tmp_path_factory.mktemp("m2-unsupervised")
    data = template_corpus(str(root / "corpus"), labeled=0.0)
    runs = []
    for seed in range(4):
        pyro.clear_param_store()
        run = str(root / f"run{seed}")
        options = {**M2, "prior": "class:4", "class_init": 200, "kl_schedule": "constant:1"}
        train(TrainConfig(data=data, seed=seed, **options), run, log=quiet, progress=False)
        runs.append(run)
    return runs


def test_the_unlabeled_m2_started_from_word_clusters_recovers_the_templates(unsupervised_runs):
    import pyro_svae

    scores = []
    for run in unsupervised_runs:
        vae = pyro_svae.load(run, device="cpu")
        sentences = [line.partition("\t")[2] for line in open(os.path.join(run, "..", "corpus", "test.txt"))]
        truth = [template_of(s.strip()) for s in sentences]
        scores.append(nmi(vae.classify([s.strip() for s in sentences]).argmax(1).tolist(), truth))
    assert sum(s >= 0.9 for s in scores) >= 3, scores


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A class-conditional toy: every training sentence labeled with its template."""
    root = tmp_path_factory.mktemp("conditional")
    pyro.clear_param_store()
    train(TrainConfig(data=template_corpus(str(root / "corpus"), labeled=1.0), **M2), str(root / "run"), log=quiet,
          progress=False)
    return str(root / "run")


def test_sample_classify_and_transfer_follow_the_classes(conditional_run, run_cli):
    run = conditional_run
    for label in "0123":
        code, out, err = run_cli("sample", run, "--label", label, "-n", "5", "--json")
        assert code == 0, err
        rows = json.loads(out)
        template = TEMPLATES[int(label)].split()
        for row in rows:  # that class's template, its slot filled by one of the class's own words
            assert row["class"] == label
            words = row["text"].split()
            assert len(words) == len(template), row
            assert all(w == t or (t == "{}" and w.startswith(f"s{label}x")) for w, t in zip(words, template)), row
    sentence = TEMPLATES[2].format("s2x1")
    code, out, _ = run_cli("classify", run, sentence, "--json")
    assert code == 0 and json.loads(out)[0]["class"] == "2"
    assert json.loads(out)[0]["probabilities"]["2"] > 0.9
    code, out, _ = run_cli("transfer", run, "--to", "3", sentence, "--json")
    row = json.loads(out)[0]
    assert code == 0 and row["from"] == "2" and row["to"] == "3"
    assert row["text"].split()[-4:] == TEMPLATES[3].split()[-4:]  # decoded as class 3's template
    code, _, err = run_cli("sample", run, "--label", "7")
    assert code == 1 and "unknown label '7'" in err and "0, 1, 2, 3" in err


def test_evaluate_sums_the_label_out_and_scores_the_classifier(conditional_run, run_cli):
    import pyro_svae

    vae = pyro_svae.load(conditional_run, device="cpu")
    result = vae.evaluate("test", samples=20, progress=False)
    totals, rows = result["totals"], result["sentences"]
    assert totals["labeled"] == 80 and totals["accuracy"] == 1.0
    assert sum(c["sentences"] for c in totals["per_class"].values()) == 80
    for row in rows:
        assert row["nll"] <= -row["elbo"] + 1e-4  # the IW estimate is at least the ELBO
        # each template belongs to one class, so p(x) = p(y) p(x | y) for the sentence's own y
        assert row["nll"] == pytest.approx(row["nll_given_label"] + math.log(4), abs=0.05)
    code, out, _ = run_cli("evaluate", conditional_run, "--iw-samples", "5", "--json", "--quiet")
    assert code == 0 and json.loads(out)["accuracy"] == 1.0


def test_posterior_and_homotopy_move_between_the_classes(conditional_run, run_cli):
    first, second = TEMPLATES[0].format("s0x1"), TEMPLATES[3].format("s3x0")
    code, out, err = run_cli("posterior", conditional_run, first, "-n", "4", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 4 and all(r["text"].split()[2:] == first.split()[2:] for r in rows)  # class 0's template
    code, out, err = run_cli("homotopy", conditional_run, first, second, "--steps", "5", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["t"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert rows[0]["text"] == first and rows[-1]["text"] == second  # the end points are the sentences
    assert len(rows[0]["z"]) == 2 + 4  # the code: z and the label's one-hot


@pytest.mark.parametrize("options, fragment", [
    (["--prior", "class"], "the corpus has no labels; give --labels tab"),
    (["--prior", "class:1"], "K must be an integer of at least 2"),
    (["--prior", "class:2", "--guide", "hier-structured"], "a single-site guide"),
    (["--prior", "class:2", "--pretrain-steps", "10"], "no --iw-particles or --pretrain-steps"),
    (["--prior", "class:2", "--select", "bleu"], "are for the sentence VAE"),
    (["--class-info", "1"], "--class-info 1.0: the reward is on the classes of --prior class"),
    (["--class-init", "10"], "--class-init 10: it starts the classes of --prior class"),
])
def test_bad_class_options_are_one_line_errors_before_any_work(corpus, tmp_path, run_cli, options, fragment):
    code, _, err = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "1", *options)
    assert code == 1 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_explorer_serves_a_labeled_run(conditional_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pyro_svae.app.explorer import create_app

    client = TestClient(create_app(conditional_run, map_size=40, device="cpu"))
    assert client.get("/api/info").json()["labels"] == ["0", "1", "2", "3"]
    m = client.get("/api/map").json()
    assert len(m["labels"]) == len(m["texts"]) == 40
    assert [template_of(text) for text in m["texts"]] == [int(label) for label in m["labels"]]  # coloured by template
    r = client.post("/api/sample", json={"n": 4, "label": "1"}).json()
    assert all(template_of(s["text"]) == 1 and len(s["xy"]) == 2 for s in r["samples"])
    sentence = TEMPLATES[2].format("s2x0")
    r = client.post("/api/posterior", json={"sentence": sentence, "n": 3}).json()
    assert r["label"] == "2" and r["probabilities"]["2"] > 0.9 and template_of(r["reconstruction"]["text"]) == 2
    r = client.post("/api/homotopy", json={"first": sentence, "second": TEMPLATES[3].format("s3x1"), "steps": 3}).json()
    assert len(r["path"]) == 3 and all(len(p["xy"]) == 2 for p in r["path"])
    r = client.post("/api/sample", json={"n": 2, "label": "9"})
    assert r.status_code == 400 and "unknown label '9'" in r.json()["detail"]


def test_the_explorer_page_colours_by_label_and_samples_a_chosen_label(conditional_run):
    from conftest import explorer_in_chromium

    with explorer_in_chromium(conditional_run, 40) as (driver, wait):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        points = driver.find_elements(By.CSS_SELECTOR, "#map-plot circle.point")
        assert len(points) == 40 and not driver.find_element(By.ID, "error").is_displayed()
        by_fill = {}
        for p in points:  # one colour per predicted label, and so per template
            text = p.find_element(By.TAG_NAME, "title").get_attribute("textContent")
            by_fill.setdefault(p.get_attribute("fill"), set()).add(template_of(text))
        assert len(by_fill) == 4 and all(len(templates) == 1 for templates in by_fill.values())
        assert len(driver.find_elements(By.CSS_SELECTOR, "#legend .swatch")) == 4
        driver.find_element(By.CSS_SELECTOR, "[data-tab=prior]").click()
        Select(driver.find_element(By.ID, "sample-label")).select_by_value("3")
        driver.find_element(By.ID, "run-sample").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sample-out li"))
        samples = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sample-out li")]
        assert len(samples) == 5 and all(template_of(s) == 3 for s in samples), samples


def test_rerank_under_a_label_scores_candidates_by_q_of_z_given_the_sentence_and_that_label(m2):
    from pyro_svae.data.corpus import decoded_ids
    from pyro_svae.data.tokenizers import BOS, PAD
    from pyro_svae.models.decoding import Beam, beams
    from pyro_svae.models.likelihood import Sentences

    with torch.no_grad():  # <pad> and <s> ~impossible: teacher-forced log p equals the search's scores
        m2.decoder.out.bias[PAD] = m2.decoder.out.bias[BOS] = -1e4
    g = torch.Generator().manual_seed(5)
    z, y, W = torch.randn(30, 3, generator=g), torch.randint(0, K, (30,), generator=g), 5
    with torch.inference_mode():
        chosen = m2.decode(y, z, Beam(W, rerank=True), max_len=6)[1]
        history = beams(m2.decoder, m2.code(z, y), 6, 30, W)[0]
        changed = 0
        for i in range(30):
            cands, code = history[i], m2.code(z[i : i + 1], y[i : i + 1]).expand(W, -1)
            batch = make_batch(decoded_ids(cands))
            log_q = m2.q_z(m2.encoder(batch.targets, batch.lengths), y[i].expand(W)).log_prob(z[i].expand(W, -1))
            score = (Sentences(m2.decoder, code).log_prob(cands) + log_q) / (cands != PAD).sum(1)
            assert torch.equal(chosen[i], cands[score.argmax()])
            changed += not torch.equal(chosen[i], cands[(score - log_q / (cands != PAD).sum(1)).argmax()])
    assert changed > 0
