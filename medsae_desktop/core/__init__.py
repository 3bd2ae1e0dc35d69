"""Pure logic of medsae-desktop.

Nothing under ``core`` imports Qt (enforced by ``tests/test_contracts.py``). Heavy libraries
(torch, onnxruntime, transformers) are imported lazily inside the backends that need them.
"""
