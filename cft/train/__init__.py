"""Training: method -> (prompt, target) formatting, tokenization with prompt masks, trainer."""
