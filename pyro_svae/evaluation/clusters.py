"""A mixture prior's components as clusters of sentences: sizes, members, characteristic words."""

import collections
import math

import torch

from ..data.corpus import make_batch


@torch.inference_mode()
def clusters(svae, mixture, tokenizer, data, top=10, batch_size=64):
    """Each sentence of ``data`` goes to its most probable component of ``mixture`` (``svae.prior``).
    -> [{"component", "weight" (pi_k), "size", "share" (mean posterior), "sentences" (the ``top``
    most probable members), "words" (the ``top`` most characteristic words: count in the cluster x
    log of how much likelier there than in the data)}], largest first."""
    posts, texts = [], []
    for start in range(0, len(data), batch_size):
        ids = [data.sentence(i) for i in range(start, min(start + batch_size, len(data)))]
        posts.append(svae.component_posterior(make_batch(ids).to(svae.device)).cpu())
        texts += [tokenizer.decode(s) for s in ids]
    posts = torch.cat(posts)
    best, prob = posts.argmax(1), posts.max(1).values
    everywhere = collections.Counter(w for t in texts for w in t.split())
    total = sum(everywhere.values())
    weights = mixture.weights().cpu()
    out = []
    for k in range(mixture.k):
        members = (best == k).nonzero().squeeze(1)
        members = members[prob[members].argsort(descending=True)]
        words = collections.Counter(w for i in members.tolist() for w in texts[i].split())
        n = sum(words.values())
        lift = {w: c * math.log(c / n / (everywhere[w] / total)) for w, c in words.items() if c > 1}
        out.append({"component": k, "weight": float(weights[k]), "size": len(members),
                    "share": float(posts[:, k].mean()),
                    "sentences": [texts[i] for i in members[:top].tolist()],
                    "words": [w for w, v in sorted(lift.items(), key=lambda kv: -kv[1]) if v > 0][:top]})
    return sorted(out, key=lambda c: -c["size"])
