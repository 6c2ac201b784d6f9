"""pyro-svae: sentence VAEs (Bowman et al. 2015) in Pyro."""

from .errors import SVAEError
from .model import ModelConfig, SentenceVAE

__version__ = "0.1.0"
__all__ = ["ModelConfig", "SentenceVAE", "SVAEError", "__version__"]
