"""The shop's rules, pure: what a badge tap, a plug reading or a button press means.

``access`` (may this member use this tool now), ``sessions`` (a tool's session from tap
to release), ``presence`` (who is in), ``power`` (plug readings to busy / idle),
``seen`` (which events were already counted), ``records`` (what the engine knows and
returns) and ``engine`` (the :class:`~hub.rules.engine.ShopEngine` that runs them all).
Every function takes ``now``; nothing here reads a clock, touches a database or a socket.

May import: hub.contract, hub.peerconomy, the base modules.  No SQLAlchemy, paho, click
or Flask, and no clock (checked by tests/test_house.py and import-linter).
"""
