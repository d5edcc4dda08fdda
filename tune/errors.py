"""The product's exceptions (defined in `models.errors`, the one package every other may
import)."""

from models.errors import (  # noqa: F401  (re-exported)
    ConfigError,
    DataFileError,
    MipetTuneError,
    NonFiniteLossError,
    ResourceError,
)
