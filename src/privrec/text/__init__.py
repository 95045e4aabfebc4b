"""Layer 3: the sentence encoder, the embedding cache and LoRA fine-tuning."""
