"""``cli.py serve RUN``: a local web explorer of a trained run (FastAPI, served by uvicorn).

The page (``static/``: HTML, JS and CSS, no CDN) calls a JSON API under ``/api/`` that mirrors
the Python API of ``pyro_svae.load``; this module only translates requests. Requests are
limited (sentence length, n, steps, beam) so one cannot pin the CPU, and bad input answers
400 with the one-line message the CLI prints. The model serves one request at a time.
"""

import csv
import os
import threading
from typing import Literal

import pyro
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from ..errors import SVAEError
from ..evaluation.reconstruction import sentence_bleu
from ..training.rundir import METRICS
from .trained import load

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
LIMITS = {"chars": 400, "n": 20, "steps": 20, "beam": 10, "map": 2000}


class Decoding(BaseModel):
    strategy: Literal["greedy", "sample", "beam"] = "greedy"
    beam: int = 5
    temperature: float = 1.0
    top_k: int = 0
    unk: bool = True  # as TrainedVAE's; the page sends its <unk> checkbox, which starts unticked
    rerank: bool = False  # beam: the candidate that best explains z both ways (decoding.Beam)
    seed: int = 0

    def options(self):
        """The decoding keywords of TrainedVAE, after the request limits."""
        _limit("beam", self.beam, LIMITS["beam"])
        return {"strategy": self.strategy, "beam": self.beam, "temperature": self.temperature, "top_k": self.top_k,
                "unk": self.unk, "rerank": self.rerank}


class SampleRequest(Decoding):
    n: int = 5
    label: str | None = None  # a --prior class run: decode under this label


class SentencesRequest(Decoding):
    sentences: list[str]


class PosteriorRequest(Decoding):
    sentence: str
    n: int = 5


class HomotopyRequest(Decoding):
    first: str
    second: str
    steps: int = 5


def _limit(name, value, maximum, minimum=1):
    if not minimum <= value <= maximum:
        raise SVAEError(f"{name} {value}: must lie in [{minimum}, {maximum}] for one request")


def _check_sentences(sentences):
    _limit("sentences", len(sentences), LIMITS["n"])
    for i, s in enumerate(sentences, 1):
        if len(s) > LIMITS["chars"]:
            raise SVAEError(f"sentence {i} has {len(s)} characters; at most {LIMITS['chars']} for one request")


def create_app(run, split="valid", device="auto", checkpoint="best", map_size=1000, projection="auto"):
    """The explorer's FastAPI app over the run directory ``run``. A --prior chain run's map places each
    sentence in its document, and its samples, reconstructions and homotopies are documents."""
    vae = load(run, device=device, which=checkpoint, warn=lambda m: None)
    labels = getattr(vae, "labels", None)  # a --prior class run's label names
    lock = threading.Lock()  # one request at a time uses the model (and the global RNG)
    latent_map = vae.latent_map(split, map_size, method=projection) if vae.z_dim else None  # an LM has none
    # FastAPI's /docs page loads Swagger UI from a CDN; this one serves it from the swagger-ui-bundle package
    app = FastAPI(title="pyro-svae explorer", version="1", description=f"Explore the sentence VAE in {run}.",
                  docs_url=None, redoc_url=None)

    @app.exception_handler(SVAEError)
    async def bad_input(request: Request, e: SVAEError):
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            return JSONResponse({"detail": "the request body is not valid JSON"}, status_code=422)
        where = ".".join(str(x) for x in first["loc"][1:]) or "the request body"
        return JSONResponse({"detail": f"{where}: {first['msg']}"}, status_code=422)

    def run_model(seed, work):
        """``work(vae)`` under the lock, seeded; -> (its result, the warnings it raised)."""
        warnings = []
        with lock:
            vae.warn = warnings.append
            pyro.set_rng_seed(seed)
            return work(vae), warnings

    def rows(z, texts):
        """Decoded sentences with their codes' places on the map."""
        xy = latent_map.project(z[:, : vae.z_dim]).tolist() if z is not None else [None] * len(texts)  # M2: z of [z, y]
        return [{"text": t, "xy": p} for t, p in zip(texts, xy)]

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(STATIC, "explorer.html"))

    @app.get("/docs", include_in_schema=False)
    def api_docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pyro-svae explorer API",
                                   swagger_js_url="/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger/swagger-ui.css",
                                   swagger_favicon_url="/swagger/favicon-32x32.png")

    @app.get("/api/info")
    def info():
        """The run: its configuration, vocabulary size, latent size, the map's split and the limits."""
        return {"run": run, "config": vae.config["train"], "vocab_size": len(vae.tokenizer),
                "z_dim": vae.z_dim, "split": split, "map_size": map_size, "limits": LIMITS, "labels": labels,
                "documents": hasattr(vae, "chain")}

    @app.get("/api/map")
    def map_points():
        """Posterior means of the split's first sentences, in 2-D (PCA or UMAP), with their texts and lengths."""
        if latent_map is None:
            raise SVAEError("this run is a language model: it has no latent space")
        m = latent_map
        return {"split": split, "method": m.method, "points": m.points.tolist(), "texts": m.texts, "lengths": m.lengths,
                "labels": getattr(m, "labels", None), "documents": getattr(m, "documents", None)}

    @app.post("/api/sample")
    def sample(r: SampleRequest):
        """n sentences decoded from z ~ p(z) (a --prior chain run: one document of n sentences)."""
        _limit("n", r.n, LIMITS["n"])
        (z, texts), warnings = run_model(r.seed, lambda v: v.sample(r.n, label=r.label, **r.options()))
        return {"samples": rows(z, texts), "warnings": warnings}

    @app.post("/api/reconstruct")
    def reconstruct(r: SentencesRequest):
        """Each sentence's posterior mean, decoded."""
        _check_sentences(r.sentences)
        (z, texts), warnings = run_model(r.seed, lambda v: v.reconstruct(r.sentences, **r.options()))
        return {"reconstructions": rows(z, texts), "warnings": warnings}

    @app.post("/api/encode")
    def encode(r: SentencesRequest):
        """q(z|x) of each sentence: mean, standard deviation (of the marginals) and place on the map."""
        _check_sentences(r.sentences)
        q, warnings = run_model(r.seed, lambda v: v.encode(r.sentences))
        mean, std = q.mean.cpu(), q.variance.sqrt().cpu()
        xy = latent_map.project(mean).tolist()
        return {"codes": [{"mean": m.tolist(), "std": s.tolist(), "xy": p} for m, s, p in zip(mean, std, xy)],
                "warnings": warnings}

    @app.post("/api/posterior")
    def posterior(r: PosteriorRequest):
        """n draws z ~ q(z|x) decoded, with the reconstruction (posterior mean) and KL(q || p)."""
        _check_sentences([r.sentence])
        _limit("n", r.n, LIMITS["n"])

        def work(v):
            z, texts = v.posterior([r.sentence], n=r.n, **r.options())
            mean, rec = v.reconstruct([r.sentence], **r.options())
            probs = v.classify([r.sentence])[0] if labels else None
            return z, texts, mean, rec[0], float(v.kl([r.sentence])[0]), probs

        (z, texts, mean, rec, kl, probs), warnings = run_model(r.seed, work)
        label = {"label": labels[int(probs.argmax())], "probabilities": dict(zip(labels, probs.tolist()))} if labels else {}
        return {"sentence": r.sentence, "reconstruction": rows(mean, [rec])[0], "kl": kl, "samples": rows(z, texts),
                "bleu": sentence_bleu(r.sentence, rec), "warnings": warnings, **label}

    @app.post("/api/homotopy")
    def homotopy(r: HomotopyRequest):
        """``steps`` evenly spaced codes between two sentences' posterior means, decoded."""
        _check_sentences([r.first, r.second])
        if r.steps > LIMITS["steps"]:  # (fewer than 2: TrainedVAE says why)
            _limit("steps", r.steps, LIMITS["steps"])
        (z, texts), warnings = run_model(r.seed, lambda v: v.homotopy(r.first, r.second, r.steps, **r.options()))
        return {"path": rows(z, texts), "warnings": warnings}

    @app.get("/api/metrics")
    def metrics():
        """The run's metrics.csv rows (numbers) and its configuration."""
        path = os.path.join(run, METRICS)
        table = []
        if os.path.isfile(path):
            with open(path, newline="") as f:
                table = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        return {"rows": table, "config": vae.config["train"]}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")
    return app


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None
