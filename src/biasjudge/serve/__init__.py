"""The judge as a service: a FastAPI app (:mod:`.app`, `create_app(settings)`), its request and
response schemas (:mod:`.schemas`), the micro-batching queue in front of the model
(:mod:`.batcher`) and a Python client (:mod:`.client`). Nothing else in biasjudge imports this
package; `biasjudge serve` runs it under uvicorn.
"""
