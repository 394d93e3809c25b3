"""Search-QA (Search-R1 style): search a corpus with `<search>`, answer with `<answer>`, reward exact match.

See `env.py` for the interaction, `knowledge.py` for the shipped fictional knowledge base, `data.py` for
a user's own corpus and questions, `retriever.py` for the retriever interface and BM25.
"""

from turnrl.environments.searchqa.env import SearchQAEnv
from turnrl.environments.searchqa.retriever import BM25Retriever, Passage, Retriever

__all__ = ["BM25Retriever", "Passage", "Retriever", "SearchQAEnv"]
