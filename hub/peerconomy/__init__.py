"""The peer economy's arithmetic, pure: numbers, weights, sharing models, the auction.

``economy`` holds exact decimal helpers, task weights (rule (a)), the sharing models of a
period (flat_rate, flat_allocation, production_effort) and the slot auction;
``scenario`` reads a scenario file and runs it through them (``peershop simulate``).
Every function takes ``now`` where time matters; nothing here reads a clock.

May import: the base modules (hub.errors).  No SQLAlchemy, paho, click or Flask.
"""
