"""One alignment run, from its checks to its last checkpoint.

- preflight.py: what a new run checks before its folder, Ray or an engine exists.
- run_dir.py: the run folder created or opened, its lock; run_files.py: every file in it, named once.
- inputs.py: the fingerprints of what the run ran on, checked again on resume.
- rollout_pool.py: the run's config → the workers' pool.
- coordinator.py: the loop (ask → evaluate → tell → log → validate → checkpoint) and the run's phases.
- calibration.py: the initial step size, measured.
- sampler.py: which prompts each generation sees, resumably.
- checkpoint.py: checkpoints and the best point; run_log.py: metrics.jsonl and TensorBoard.
"""
