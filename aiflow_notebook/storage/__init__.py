"""Where bytes last: the one database (engines, transactions, migrations), the blob store of submitted
payloads, and the committed part files that jobs write. Imports only ``core``.
"""
