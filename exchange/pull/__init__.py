"""The consent-checked pull: a relying party obtains minimal, verifiable certificates."""
