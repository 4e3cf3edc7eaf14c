"""What the examples share: the command line (:mod:`.cli`), the training harness (:mod:`.harness`),
the run folder (:mod:`.run_folder`), data checks (:mod:`.data`), plots (:mod:`.plots`) and each
modality's data (``*_data.py``).

Modules here import each other relatively, so the kit works both as ``examples.kit`` (the
package, ``python -m examples.<name>`` and the tests) and as ``kit`` (``python examples/<name>.py``,
where Python puts the examples folder first on ``sys.path``).
"""
