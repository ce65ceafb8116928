"""One module per pipeline stage: ``run(params, paths...) -> metrics`` and ``main()``.

DVC stages and Kubeflow components are thin adapters over these ``run`` functions.
"""
