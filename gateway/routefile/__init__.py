"""Everything about the route file, along its data flow:

    model.py         the frozen value objects (every spec, the policies' included)
    nodes.py         reading YAML node values, collecting problems with positions
    policy_rules.py  checking the migration policy keys, one rule per key
    session_rules.py checking the shared-login keys of a backend
    checking.py      walking the whole file into a config
    loading.py       bytes in, `GatewayConfig` or `ConfigError` out; import checks
    editing.py       splice edits (flip, canary percent) that keep comments and layout

Each module imports only those above it.
"""
