"""pyro-svae: sentence VAEs (Bowman et al. 2015) in Pyro."""

__version__ = "0.1.0"

from .errors import SVAEError  # noqa: E402
from .models.vae import ModelConfig, SentenceVAE  # noqa: E402
from .models.labeled import LabeledVAE  # noqa: E402
from .inference.objectives import FreeBitsELBO, ImportanceWeightedELBO  # noqa: E402
from .data.store import StoreOptions, load_store, prepare_store  # noqa: E402
from .training.config import TrainConfig, config_from  # noqa: E402
from .training.run import train  # noqa: E402
from .app.trained import TrainedVAE, load  # noqa: E402
from .app.labeled import TrainedLabeledVAE  # noqa: E402
from .training.labeled import LabeledELBO  # noqa: E402

__all__ = ["FreeBitsELBO", "ImportanceWeightedELBO", "LabeledELBO", "LabeledVAE", "ModelConfig", "SentenceVAE",
           "StoreOptions", "SVAEError", "TrainConfig", "TrainedLabeledVAE", "TrainedVAE", "config_from", "load",
           "load_store", "prepare_store", "train", "__version__"]
