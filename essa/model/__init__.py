"""The model and its adapter, before and after a search: where the weights come from, in which
dtype and quantization they load, and the adapter whose singular values the search moves.

- provision.py: model names (the embedded model, a GGUF file, a folder, a hub id) → local folders.
- dtypes.py: the dtype an engine (and the SFT) loads a model in (`model.dtype=auto`).
- quantize.py: INT8 / INT4 compressed-tensors bases, made once.
- adapters.py: principal init; PEFT LoRA folders read and written.
- sft.py: the supervised warm start (`essa sft`, `adapter.init=sft`), cached.
- warm_start.py: the adapter a search begins from (SFT, principal, or a user's folder).
- svd_lora.py: the SVD-LoRA basis: frozen singular vectors, searched singular values.
- merge.py: a point merged into the base model (`essa export --merge`).
"""
