"""pyro-svae: sentence VAEs (Bowman et al. 2015) in Pyro."""

__version__ = "0.1.0"

from .errors import SVAEError  # noqa: E402
from .models.vae import ModelConfig, SentenceVAE  # noqa: E402
from .inference.objectives import FreeBitsELBO, ImportanceWeightedELBO  # noqa: E402
from .data.store import StoreOptions, load_store, prepare_store  # noqa: E402
from .training.config import TrainConfig, config_from  # noqa: E402
from .training.run import train  # noqa: E402
from .app.trained import TrainedVAE, load  # noqa: E402

__all__ = ["FreeBitsELBO", "ImportanceWeightedELBO", "ModelConfig", "SentenceVAE", "StoreOptions", "SVAEError",
           "TrainConfig", "TrainedVAE", "config_from", "load", "load_store", "prepare_store", "train", "__version__"]
