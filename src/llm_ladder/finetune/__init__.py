"""Fine-tuning: LoRA/QLoRA training (lora.py), the training data and its checks (data.py),
distillation from a teacher (distill.py), content-addressed adapters (registry.py) and the
rungs that use them (rungs.py)."""
