"""recfunnel: a multi-stage recommender system.

retrieval (many channels) -> pre-ranking -> ranking -> re-ranking, trained
offline, updated nearline from events, served online.
"""

__version__ = "0.1.0"
