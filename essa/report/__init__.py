"""What a run tells and hands over: held-out figures, the exported adapter and how a run stands.

- heldout.py: the warm start against the exported point on prompts the search never saw.
- forgetting.py: whether alignment on one task cost another.
- evaluate.py: `essa eval`, a task's metric for any adapter on any split.
- export.py: the best point as a PEFT LoRA folder (or a merged model); model_card.py its README.
- hub.py: an exported folder pushed to the Hugging Face Hub.
- status.py: `essa status`; plots.py: reward curves from metrics.jsonl.
"""
