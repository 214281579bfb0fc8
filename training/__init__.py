"""Training: option dataclasses, model/adapter setup, TRL SFTTrainer wiring, configs."""
