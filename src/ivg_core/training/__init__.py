"""Training value functions: DPO-tuned guides and token reward models."""
