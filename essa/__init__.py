"""essa: gradient-free alignment of language models with evolution strategies over SVD-LoRA singular values."""

__version__ = "0.1.0"
