"""pyro-svae: sentence VAEs (Bowman et al. 2015) in Pyro."""

__version__ = "0.1.0"

from .errors import SVAEError  # noqa: E402
from .models.vae import ModelConfig, SentenceVAE  # noqa: E402
from .models.labeled import LabeledVAE  # noqa: E402
from .models.documents import ChainVAE  # noqa: E402
from .data.documents import make_document_batch  # noqa: E402
from .inference.objectives import DocumentELBO, FreeBitsELBO, ImportanceWeightedELBO  # noqa: E402
from .data.store import StoreOptions, load_store, prepare_store  # noqa: E402
from .training.config import TrainConfig, config_from  # noqa: E402
from .training.run import train  # noqa: E402
from .app.trained import TrainedVAE, load  # noqa: E402
from .app.labeled import TrainedLabeledVAE  # noqa: E402
from .app.documents import TrainedChainVAE  # noqa: E402
from .training.labeled import LabeledELBO  # noqa: E402

__all__ = ["ChainVAE", "DocumentELBO", "FreeBitsELBO", "ImportanceWeightedELBO", "LabeledELBO", "LabeledVAE",
           "ModelConfig", "SentenceVAE", "StoreOptions", "SVAEError", "TrainConfig", "TrainedChainVAE",
           "TrainedLabeledVAE", "TrainedVAE", "config_from", "load", "load_store", "make_document_batch",
           "prepare_store", "train", "__version__"]
