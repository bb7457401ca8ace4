"""`paretoalign serve`: the reward model (and optionally a policy) over HTTP, with a web explorer.

Endpoints (JSON; errors are ``{"error": {"message", "type", "path", "code"}}`` with the JSON path of the bad part):

- ``POST /v1/rewards`` {items: [{prompt, response}], weights?}: score, per-objective r', gating and verbosity
  contribution of each row (with weights w: score = sum_i w_i r'_i exactly);
- ``POST /get_reward`` {query: [...], prompts?, labels?, weights?}: OpenRLHF's remote reward model (templated
  queries split with --query-template, or with their prompts);
- ``POST /classify`` {input | messages}: vLLM's classification shape (probs = r', label = the top objective);
- ``POST /score`` {queries | text_1 | data_1, documents | items | text_2 | data_2}: vLLM's score shape, 1 vs N or
  N vs N;
- ``POST /v1/best-of-n`` {prompt, n, max_new_tokens?, temperature?, top_p?, top_k?, seed?, stop?, weights?}: the
  `paretoalign bon` row of one prompt (404 without --policy);
- ``GET /health`` (open without a token), ``GET /v1/models``, ``GET /metrics`` (Prometheus);
- ``GET /`` and ``/explorer/...``: the web explorer (static files, open without a token; the page asks for the
  token and sends it on its API calls).

Modules: `config` (ServeConfig), `schemas` (request models), `errors` (the error shape), `security` (token, body
limit, bind check, CORS), `app` (create_app), `runner` (serve), `batcher` (micro-batching), `metrics`,
`query_split` (templated queries -> messages), `ray_serve` (the Ray engine), `explorer/` (the page).
"""
