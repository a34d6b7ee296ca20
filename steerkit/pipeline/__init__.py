"""The pipeline: params.yaml's schema, the stage graph (once), running a stage, DVC glue, planning, the summary.

``dvc.yaml``, ``flows/pipeline.py`` and ``steerkit pipeline ...`` are thin doors onto this package.
"""
