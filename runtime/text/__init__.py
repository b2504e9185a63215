"""Class names as text: the cleaning and tokenising rules shared with training, the rule a
class name must pass, and the exported text tower that embeds names."""
