"""A toy reward with a known optimum, for the RL tests: the share of ASCII characters (1.0 is best)."""


def ascii_share(prompts, completions, rows, **_):
    return [sum(c.isascii() for c in text) / max(len(text), 1) for text in completions]
