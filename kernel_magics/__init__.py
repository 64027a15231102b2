"""IPython extension: ``%load_ext kernel_magics`` registers ``%%aiflow`` / ``%aiflow`` (DESIGN §4.5).

The magics are thin: they parse a line and call the ``aiflow_notebook`` SDK.
"""
