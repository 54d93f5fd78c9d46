"""Tables shipped with the project for `evaluator=table` (see each folder's README for sources and licences)."""
