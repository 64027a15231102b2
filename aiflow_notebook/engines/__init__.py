"""Job runners per engine (python, bash, flink; pytorch and tensorflow via dl_on_flink).

``process`` runs every job in its own supervised process group; the runners build on it.
"""
