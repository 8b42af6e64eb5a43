"""Tasks and reward functions."""
