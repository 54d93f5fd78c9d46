"""The export's parts, one job each, that `python -m mnas_nni.export` (mnas_nni/export.py) puts together: finding
the architecture a SOURCE names (`arch_source`), the standalone model.py (`model_code`), the retrain.yaml recipe
(`retrain_recipe`) and the export folder's README (`readme`). Callers import them from mnas_nni.export."""
