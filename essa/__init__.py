"""essa: gradient-free alignment of language models with evolution strategies over SVD-LoRA singular values."""

from importlib.metadata import PackageNotFoundError, version

try:  # one place holds the version: pyproject.toml, as the installed distribution reports it
    __version__ = version("essa-align")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
