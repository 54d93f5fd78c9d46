"""What plugins (search_spaces, strategies, evaluators) may import from the core without pulling in the app:
user-facing errors, config instantiation, the retry helper."""
