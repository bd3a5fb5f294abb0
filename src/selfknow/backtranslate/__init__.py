"""Instruction backtranslation (Li et al. 2023, Humpback): self-augment human text with instructions, self-curate."""
