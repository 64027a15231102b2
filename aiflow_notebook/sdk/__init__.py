"""The notebook SDK: the AI graph, its nodes and control edges, code capture, ``af.compile`` and the compiled
``Workflow`` (with its drawing and MIME form), and the runtime that runs one job's nodes.
"""
