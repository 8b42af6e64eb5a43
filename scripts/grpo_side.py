"""The GRPO side of scripts/compare_grpo.py: TRL's GRPOTrainer with a PEFT LoRA, run as a subprocess.

    python scripts/grpo_side.py SETTINGS.json    (written by compare_grpo.py; see grpo_config)

Same prompts (essa's own prompt builder), same reward (essa's SafeReward around the task's score),
same warm-start LoRA as the essa side; the adapter is saved every `save_every` optimizer steps
with its wall time, and the budget's SIGTERM ends the training with the logs closed.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path


def grpo_config(args, cfg, model_dir: Path, warm: Path, run_dir: Path) -> dict:
    """What the GRPO child runs with; saved as grpo_settings.json and reported."""
    return {
        "config_yaml": str(run_dir.parent / "config.yaml"),
        "model_dir": str(model_dir),
        "warm_start": str(warm),
        "run_dir": str(run_dir),
        "t0_file": str(run_dir / "t0"),
        "seed": args.seed,
        "threads": args.grpo_threads,
        "save_every": args.grpo_save_every,
        "prompts_per_step": args.grpo_prompts,
        "num_generations": args.grpo_generations,
        "learning_rate": args.grpo_lr,
        "lr_scheduler": "constant",
        "temperature": args.grpo_temperature,
        "beta": args.grpo_beta,
        "max_completion_length": cfg.generation.max_new_tokens,
        "dtype": args.grpo_dtype,
        "notes": "TRL GRPOTrainer on CPU; base weights in `dtype`, LoRA in float32 (PEFT's default), no "
        "autocast, no gradient checkpointing; one optimizer step per generation batch of prompts_per_step x "
        "num_generations completions (micro-batches of num_generations); TRL's default loss (loss_type "
        "'dapo', scale_rewards 'group', epsilon 0.2, num_iterations 1)",
    }


def grpo_child(settings_path: Path) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*TRL currently supports vLLM.*")
    s = json.loads(settings_path.read_text())
    t0 = float(Path(s["t0_file"]).read_text())
    run_dir = Path(s["run_dir"])
    (run_dir / "adapters").mkdir(parents=True, exist_ok=True)

    import torch

    if s["threads"]:
        torch.set_num_threads(int(s["threads"]))
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from essa.config import from_yaml_file
    from essa.rewards.plugins import SafeReward
    from essa.rewards.task import load_task
    from essa.workers.actor import RolloutWorker

    cfg = from_yaml_file(s["config_yaml"])
    task = load_task(cfg.task)
    examples = task.examples("train")
    tokenizer = AutoTokenizer.from_pretrained(s["model_dir"])

    # The prompt string exactly as an essa rollout worker builds it for vLLM (the task's messages,
    # the model's chat template with the generation prompt): RolloutWorker._prompt itself, on a
    # stand-in that holds this tokenizer in place of the engine's.
    class _Engine:
        def tokenizer(self):
            return tokenizer

    class _PromptShim:
        def __init__(self):
            self.task, self.engine, self._prompts = task, _Engine(), {}

    shim = _PromptShim()
    prompts = [RolloutWorker._prompt(shim, "train", i) for i in range(len(examples))]
    dataset = Dataset.from_list([{"prompt": p, "example_index": i} for i, p in enumerate(prompts)])

    reward = SafeReward(task.score, task.reward_name, cfg.task.reward_errors)  # what the workers call

    def task_reward(completions, example_index, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return reward.many(texts, [examples[i] for i in example_index], [f"train example {i}" for i in example_index])

    task_reward.__name__ = f"{task.name}_reward"

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[s["dtype"]]
    base = AutoModelForCausalLM.from_pretrained(s["model_dir"], dtype=dtype)
    model = PeftModel.from_pretrained(base, s["warm_start"], is_trainable=True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    log_file = open(run_dir / "logs.jsonl", "a")
    saves_file = open(run_dir / "saves.jsonl", "a")

    class Saver(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % s["save_every"] == 0:
                folder = run_dir / "adapters" / f"step_{state.global_step:06d}"
                model.save_pretrained(str(folder), save_embedding_layers=False)  # LoRA only; no hub look-up
                saves_file.write(
                    json.dumps({"step": state.global_step, "wall_s": time.time() - t0, "folder": str(folder)}) + "\n"
                )
                saves_file.flush()

        def on_log(self, args, state, control, logs=None, **kwargs):
            log_file.write(
                json.dumps(
                    {"step": state.global_step, "wall_s": round(time.time() - t0, 2), **(logs or {})}, default=float
                )
                + "\n"
            )
            log_file.flush()

    g, p = s["num_generations"], s["prompts_per_step"]
    config = GRPOConfig(
        output_dir=str(run_dir / "trainer"),
        per_device_train_batch_size=g,  # completions per micro-batch: one prompt's group
        gradient_accumulation_steps=p,  # -> one optimizer step per generation batch of p prompts x g completions
        num_generations=g,
        max_completion_length=s["max_completion_length"],
        temperature=s["temperature"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=s["beta"],
        max_steps=10**6,  # the wall-clock budget stops it
        logging_steps=1,
        save_strategy="no",  # the callback saves the adapter with its wall time
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=s["seed"],
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[task_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Saver()],
    )
    print(
        f"[grpo] ready after {time.time() - t0:.1f}s: {len(prompts)} train prompts, {trainable} trainable "
        f"parameters, {p} prompts x {g} completions per step, lr {s['learning_rate']}",
        flush=True,
    )

    def _terminated(signum, frame):  # the budget's SIGTERM unwinds like Ctrl-C: the logs are closed
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, _terminated)
    try:
        trainer.train()
    except KeyboardInterrupt:
        print(f"[grpo] stopped at the budget after {time.time() - t0:.0f}s", flush=True)
    finally:
        log_file.close()
        saves_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(grpo_child(Path(sys.argv[1])))
