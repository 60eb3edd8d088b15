"""Training and finetuning: configs, data, losses, the shared loop and export."""
