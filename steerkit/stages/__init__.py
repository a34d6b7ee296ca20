"""One plain function per pipeline stage: files in → files out, typed configuration in.

``dvc.yaml``'s stages, the Prefect flow and the ``steerkit`` commands all call these (through
``steerkit.pipeline`` for the first two); none of them holds logic of its own.

    prepare   data files              → data/pairs/<behavior>/{train,test}.jsonl
    train     training pairs          → vectors/<model>/<behavior>/L<layer>[.caa].safetensors
    evaluate  vector + test pairs     → reports/eval/<model>/<behavior>.{json,png}
    derive    training texts          → models/<model>/<name>/ (a LoRA fine-tune: transfer's target)
    transfer  vector + derived model  → reports/transfer/<model>/<behavior>.{json,png,md}
    compose   vectors + test pairs    → reports/compose/<model>/<combo>.{json,png}
    catalog   every vector            → vectors/catalog.json
"""
