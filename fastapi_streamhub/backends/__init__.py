"""Where sessions are stored: the contract (``base``), the in-process ``memory`` backend and ``redis``
(one Redis, Sentinel or Cluster)."""
