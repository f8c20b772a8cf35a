"""Training data: question synthesis, and the datasets built from it.

- ``crawlqa``: crawl a site breadth-first (``crawl``) and write questions its pages
  answer (``GraphQuestionWriter`` offline over the synthetic site's knowledge graph,
  ``EngineQuestionWriter`` with a chat model for any site); ``synthesize_crawlqa``.
- ``e2hqa``: make easy questions hard by replacing the named entity with a
  description of it, step by step, checking each step against the site
  (``GraphEscalator``, ``EngineEscalator``); ``synthesize_e2hqa``.

Both produce ``webdancer.envs.tasks.Task`` records whose ``meta`` carries the
source, hop count and golden path; tasks of the synthetic site also carry the
entity chain the scripted ``OracleAgent`` follows.
"""
