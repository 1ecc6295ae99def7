"""The peer economy's arithmetic, pure: numbers, weights, sharing models, the auction.

``economy`` holds exact decimal helpers, task weights (rule (a)), a period's shares and
the slot auction; ``sharing`` the sharing models (flat_rate, flat_allocation,
production_effort), one function each in a registry;
``scenario`` reads a scenario file and runs it through them (``peershop simulate``).
Every function takes ``now`` where time matters; nothing here reads a clock.

May import: the base modules (hub.errors).  No SQLAlchemy, paho, click or Flask.
"""
