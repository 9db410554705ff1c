"""The plugin's models: MMSSL (its own subpackage) and the multimodal baselines VBPR, LATTICE,
FREEDOM and BM3, one module each; ``graphs`` holds the graph pieces and losses they share and
``abstract_recommender`` their common base class."""
