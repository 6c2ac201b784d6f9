"""Documents as chains of sentence latents: the store's documents, the chain prior, the three
guides (the conjugate one exact against an independent Kalman filter), and masking."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_svae.data.documents import DocumentSplit, make_document_batch
from pyro_svae.data.sources import split_sentences
from pyro_svae.data.store import StoreOptions, prepare_store
from pyro_svae.inference.objectives import DocumentELBO
from pyro_svae.evaluation.documents import chain_positions
from pyro_svae.models.documents import DOCUMENT_GUIDES, ChainVAE, to_grid
from pyro_svae.models.vae import ModelConfig

Z = 3


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


# -- the store's documents --------------------------------------------------------------------

def test_blank_lines_end_documents_and_a_too_long_sentence_drops_its_document(tmp_path):
    corpus = tmp_path / "c"
    write(corpus, "train.txt", "a b\nc d\n\n\ne f g h i j\nk\n\nl m\n")
    write(corpus, "valid.txt", "a\n\nb c\nd\n")
    tok, splits, info = prepare_store(str(corpus), str(tmp_path / "s"), StoreOptions(documents="blank", max_len=4),
                                      log=lambda *a: None, progress=False)
    train = splits["train"]
    assert list(train.documents) == [0, 2, 3]  # "e f g h i j" is too long: its document is gone
    assert [tok.decode(train.sentence(i)) for i in range(3)] == ["a b", "c d", "l m"]
    assert info["splits"]["train"]["dropped_documents"] == 1
    docs = DocumentSplit(splits["valid"])
    assert len(docs) == 2 and docs.lengths.tolist() == [1, 2]


def test_a_document_per_line_is_cut_into_sentences_at_final_punctuation(tmp_path):
    assert split_sentences("a b . c d ? e") == ["a b .", "c d ?", "e"]
    assert split_sentences("He ran. She sat!") == ["He ran.", "She sat!"]
    corpus = tmp_path / "c"
    write(corpus, "train.txt", "a b . c d ?\ne f !\n")
    write(corpus, "valid.txt", "a . b\n")
    tok, splits, _ = prepare_store(str(corpus), str(tmp_path / "s"), StoreOptions(documents="lines"),
                                   log=lambda *a: None, progress=False)
    assert list(splits["train"].documents) == [0, 2, 3]
    assert [tok.decode(splits["valid"].sentence(i)) for i in range(2)] == ["a .", "b"]


def test_one_file_is_split_by_document(tmp_path):
    text = "".join(f"w{i} x\nw{i} y\n\n" for i in range(60))
    write(tmp_path, "all.txt", text)
    _, splits, _ = prepare_store(str(tmp_path / "all.txt"), str(tmp_path / "s"), StoreOptions(documents="blank"),
                                 log=lambda *a: None, progress=False)
    for split in splits.values():  # every document keeps both its sentences, whatever its split
        assert (np.diff(split.documents) == 2).all()
    assert sum(len(s.documents) - 1 for s in splits.values()) == 60


# -- the model against an independent Kalman filter -----------------------------------------

class LinearGaussian(ChainVAE):
    """The chain observed as x = z * c + N(0, r) (diagonal), with the potentials of the exact
    likelihood, psi(z) = N(x / c; z, r / c^2), in place of the encoder. Sentence i of the corpus is
    the one token 4 + i, and its observation is ``table[i]``, so that any regrouping of the
    documents (prefixes, repeats) observes the same values."""

    def __init__(self, guide, c, r, table):
        super().__init__(ModelConfig(vocab_size=4 + len(table), emb_dim=4, hidden=4, z_dim=Z, guide=guide,
                                     prior="chain"))
        self.c, self.r, self.table = c, r, table  # table: [N, Z]

    def values(self, s):
        return self.table[s.targets[:, 0] - 4]

    def observe(self, z, s, word_keep=1.0):
        return pyro.sample("x", dist.Normal(z * self.c, self.r.sqrt()).to_event(1), obs=self.values(s))

    def potentials(self, batch):
        x = self.values(batch.sentences)
        shape = (batch.size, batch.steps)
        loc = to_grid(x / self.c, batch.slots, shape)
        scale = to_grid((self.r.sqrt() / self.c.abs()).expand_as(x), batch.slots, shape, 1.0)
        return loc, scale


def kalman_log_likelihood(A, q, c, r, xs):
    """log p(x_1..T) of z_1 ~ N(0, I), z_t = z_{t-1} A + N(0, diag q), x_t = z_t * c + N(0, diag r):
    the Kalman filter's prediction errors, in float64 numpy."""
    A, q, c, r = (np.asarray(v, dtype=np.float64) for v in (A, q, c, r))
    H, R = np.diag(c), np.diag(r)
    mean, cov, total = np.zeros(len(q)), np.eye(len(q)), 0.0
    for t, x in enumerate(np.asarray(xs, dtype=np.float64).reshape(-1, len(q))):
        if t:
            mean, cov = mean @ A, A.T @ cov @ A + np.diag(q)
        S = H @ cov @ H.T + R
        e = x - H @ mean
        total += -0.5 * (len(x) * math.log(2 * math.pi) + np.linalg.slogdet(S)[1] + e @ np.linalg.solve(S, e))
        K = cov @ H.T @ np.linalg.inv(S)
        mean, cov = mean + K @ e, cov - K @ H @ cov
    return total


def linear_gaussian(guide, sizes, seed=0, steps=False):
    """A LinearGaussian model and a batch of documents of ``sizes`` -> (model, batch, the exact log
    p(x) of the batch; with ``steps``, log p(x_t | x_<t) per document [D][T] instead)."""
    torch.manual_seed(seed)
    table = torch.randn(sum(sizes), Z)
    c, r = torch.tensor([1.5, -0.7, 2.0]), torch.tensor([0.3, 0.5, 0.2])
    m = LinearGaussian(guide, c, r, table)
    with torch.no_grad():
        m.prior.weight.copy_(torch.tensor([[0.6, 0.2, 0.0], [-0.3, 0.5, 0.1], [0.0, 0.4, 0.7]]))
        m.prior.raw_scale.copy_(torch.tensor([0.1, -0.5, 0.3]))
    starts = np.cumsum([0] + sizes)
    batch = make_document_batch([[[4 + i] for i in range(a, a + n)] for a, n in zip(starts, sizes)])
    A, q = m.prior.matrix.detach(), (torch.nn.functional.softplus(m.prior.raw_scale) + 1e-4).detach() ** 2
    per_step = [[kalman_log_likelihood(A, q, c, r, table[a : a + t]) - kalman_log_likelihood(A, q, c, r, table[a : a + t - 1])
                 for t in range(1, n + 1)] for a, n in zip(starts, sizes)]
    return m, batch, per_step if steps else sum(map(sum, per_step))


def elbo_draws(m, batch, draws):
    loss = DocumentELBO(free_bits=0.0)
    with torch.no_grad(), pyro.validation_enabled(False):
        return torch.stack([-loss.differentiable_loss(m.model, m.guide, batch) for _ in range(draws)])


def test_the_conjugate_guides_elbo_is_the_exact_log_likelihood():
    m, batch, exact = linear_gaussian("doc-conjugate", [4, 1, 3])
    elbos = elbo_draws(m, batch, 5)
    assert elbos.double().numpy() == pytest.approx(exact, abs=1e-3)  # every draw: q is the posterior


def test_the_mean_field_guides_elbo_is_strictly_lower():
    m, batch, exact = linear_gaussian("doc-meanfield", [4, 1, 3])
    elbos = elbo_draws(m, batch, 2000).double()
    stderr = elbos.std() / math.sqrt(len(elbos))
    assert elbos.mean() < exact - 10 * stderr
    assert elbos.mean() < exact - 0.1


def test_the_conjugate_guides_sentence_given_earlier_sentences_is_the_kalman_filters():
    m, batch, per_step = linear_gaussian("doc-conjugate", [4, 1, 3], steps=True)
    with torch.no_grad():
        got = chain_positions(m.eval(), k=3)(batch)
    for d, steps in enumerate(per_step):
        assert got[d, : len(steps)].tolist() == pytest.approx(steps, abs=1e-3)
        assert (got[d, len(steps):] == 0).all()


def test_free_bits_floor_the_batchs_kl_at_free_bits_times_z_per_sentence():
    m, batch, _ = linear_gaussian("doc-meanfield", [4, 1, 3])
    losses = {}
    for fb in (0.0, 5.0):
        torch.manual_seed(7)  # the same draw
        guide_tr = poutine.trace(m.guide).get_trace(batch, size=30, beta=0.5)
        model_tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(batch, size=30, beta=0.5)
        torch.manual_seed(7)
        losses[fb] = DocumentELBO(free_bits=fb).differentiable_loss(m.model, m.guide, batch, size=30, beta=0.5)
    z = guide_tr.nodes["z"]["value"]
    kl = float((guide_tr.nodes["z"]["fn"].log_prob(z) - model_tr.nodes["z"]["fn"].log_prob(z)).sum().detach())
    floor = 5.0 * Z * 8  # 8 sentences
    assert kl < floor
    assert float((losses[5.0] - losses[0.0]).detach()) == pytest.approx(0.5 * 30 / 3 * (floor - kl), rel=1e-4)


def test_the_conjugate_posteriors_draws_have_the_kalman_smoothers_moments():
    """Mean and variance of z_1 given x_1..T (a document of 3): the smoother's, from 4,000 draws."""
    m, batch, _ = linear_gaussian("doc-conjugate", [3])
    torch.manual_seed(1)
    with torch.no_grad():
        draws = m.q(batch).rsample((4000,))[:, 0]  # [n, T, Z]
    # the joint Gaussian of (z, x) by hand: the smoother's answer
    A, s = m.prior.matrix.detach().double(), (torch.nn.functional.softplus(m.prior.raw_scale) + 1e-4).detach().double()
    T = 3
    cov = torch.zeros(T * Z, T * Z, dtype=torch.float64)
    step_cov = [torch.eye(Z, dtype=torch.float64)]
    for t in range(1, T):
        step_cov.append(A.T @ step_cov[-1] @ A + torch.diag(s ** 2))
    for i in range(T):
        for j in range(i, T):
            block = step_cov[i] @ torch.linalg.matrix_power(A, j - i)  # Cov(z_i, z_j) = Cov(z_i) A^(j-i)
            cov[i * Z:(i + 1) * Z, j * Z:(j + 1) * Z] = block
            cov[j * Z:(j + 1) * Z, i * Z:(i + 1) * Z] = block.T
    C = torch.diag(m.c.double().repeat(T))
    Sxx = C @ cov @ C.T + torch.diag(m.r.double().repeat(T))
    gain = cov @ C.T @ torch.linalg.inv(Sxx)
    mean = gain @ m.table.reshape(-1).double()
    post = cov - gain @ C @ cov
    assert draws.mean(0).double().reshape(-1) == pytest.approx(mean.reshape(T, Z)[:, :].reshape(-1).tolist(), abs=0.06)
    assert draws.double().reshape(4000, -1).var(0) == pytest.approx(torch.diagonal(post).tolist(), rel=0.1)


# -- the real networks: masking --------------------------------------------------------------

def tiny(guide):
    torch.manual_seed(0)
    m = ChainVAE(ModelConfig(vocab_size=12, emb_dim=8, hidden=8, z_dim=Z, guide=guide, prior="chain", feed_z=True))
    return m.eval()


@pytest.mark.parametrize("guide", DOCUMENT_GUIDES)
def test_a_batch_of_documents_of_different_lengths_scores_as_the_documents_one_at_a_time(guide):
    m = tiny(guide)
    docs = [[[4, 5, 6], [7]], [[8, 9]], [[4], [5, 6, 7, 8], [9, 10]]]
    batch = make_document_batch(docs)
    torch.manual_seed(3)
    z = torch.randn(3, 3, Z)

    def log_weight(b, value):
        data = {"z": value}
        guide_tr = poutine.trace(poutine.condition(m.guide, data)).get_trace(b)
        model_tr = poutine.trace(poutine.condition(m.model, data)).get_trace(b)
        return model_tr.log_prob_sum() - guide_tr.log_prob_sum()

    with torch.no_grad():
        together = log_weight(batch, z)
        alone = sum(log_weight(make_document_batch([d]), z[i : i + 1, : len(d)]) for i, d in enumerate(docs))
    assert float(together) == pytest.approx(float(alone), rel=1e-5, abs=1e-4)


def test_refining_the_mean_field_q_per_document_closes_part_of_the_gap_never_past_log_p():
    from pyro_svae.evaluation.documents import refined_elbo

    m, batch, exact = linear_gaussian("doc-meanfield", [4, 1, 3])
    torch.manual_seed(0)
    amortized, refined = refined_elbo(m.eval(), batch, steps=200, lr=0.05, draws=200)
    assert float(refined.sum()) > float(amortized.sum()) + 0.5
    assert float(refined.sum()) < exact + 0.05  # an ELBO: at most log p(x), up to the draws' noise
