"""The golden check: CI's regression of the paper's tables, a layer above the engine and the reports.

Two layers, each a folder under ``results/golden/`` with its own manifest.json:

* ``exact`` (`exact`, `inputs`): committed fixed inputs through the real evaluation and report
  code, no training; identical on any CPU, compared to 1e-9.
* ``train`` (`train`, `calibrate`, `spread`): a small training study on CPU, compared within
  per-column tolerances measured by a calibration over seeds, kernel sets and thread counts.

`manifest` reads and writes a layer's files, `compare` compares tables cell by cell, `check`
builds one layer's tables and compares (or rewrites) them. ``bench check`` is the verb
(``bench report --check`` / ``--calibrate`` its aliases). The engine and the reports never import
this package, nor each other.
"""
