"""The latent space seen in 2-D: posterior means projected by PCA or UMAP (the explorer's map)."""

import importlib.util

import torch

from ..data.corpus import make_batch
from ..errors import SVAEError


@torch.inference_mode()
def latent_map(svae, tokenizer, data, name="valid", batch_size=64, method="auto"):
    """The posterior means of the sentences of ``data`` (split ``name``), projected to 2-D by ``method``:
    pca, umap (needs umap-learn), or auto (umap where installed, else pca).
    -> LatentMap (points [n, 2], texts, lengths; .project(z) places other codes)."""
    if len(data) < 2:
        raise SVAEError(f"the {name} split has {len(data)} sentence(s); a map needs at least 2")
    means, texts = [], []
    for start in range(0, len(data), batch_size):
        ids = [data.sentence(i) for i in range(start, min(start + batch_size, len(data)))]
        means.append(svae.posterior_mean(make_batch(ids).to(svae.device)).cpu())
        texts += [tokenizer.decode(s) for s in ids]
    return LatentMap(torch.cat(means), texts, data.lengths[: len(texts)].tolist(), method)


class LatentMap:
    """Codes z [N, Z] seen in 2-D: by PCA (centred, projected on their two principal directions)
    or by UMAP (umap-learn, when installed), which also places new codes (``project``)."""

    METHODS = ("auto", "pca", "umap")

    def __init__(self, z, texts, lengths, method="auto"):
        if method not in self.METHODS:
            raise SVAEError(f"projection {method!r}: use one of {', '.join(self.METHODS)}")
        if method == "auto":
            method = "umap" if importlib.util.find_spec("umap") else "pca"
        self.method, self.texts, self.lengths = method, texts, lengths
        if method == "umap":
            try:
                import umap
            except ImportError:
                raise SVAEError("projection umap needs umap-learn: pip install umap-learn") from None
            self.umap = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1), random_state=0).fit(z.numpy())
            self.points = torch.as_tensor(self.umap.embedding_, dtype=torch.float32)
            return
        self.center = z.mean(0)
        v = torch.linalg.svd(z - self.center, full_matrices=False).Vh[:2].T  # exact PCA: z is N x Z, Z small
        self.axes = v if v.shape[1] == 2 else torch.cat([v, torch.zeros(v.shape[0], 1)], 1)  # a 1-d z: y = 0
        self.points = self.project(z)

    def project(self, z):
        """z [M, Z] -> [M, 2] in the map's coordinates."""
        z = z.detach().cpu().float()
        if self.method == "umap":
            return torch.as_tensor(self.umap.transform(z.numpy()), dtype=torch.float32)
        return (z - self.center) @ self.axes
