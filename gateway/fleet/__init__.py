"""One route table for many gateway instances: the Redis store and what lives in it.

    store.py       the keys in Redis: the table's text and revision, its history,
                   the event log, the workers' heartbeats, the change notifications
    source.py      a serving worker's view of the store: load, follow, edit, report
    events.py      the event log: in the store, or in the serve's state directory
    overrides.py   rollbacks applied to the live table but not to the source
    instances.py   heartbeats grouped by instance: `GET /-/fleet`, `gateway fleet`
    commands.py    `gateway push | pull | history | revert | fleet`

redis-py is an optional dependency (`pip install 'strangler-gateway[redis]'`):
only `store.py` imports it, and only when a store is opened.
"""
