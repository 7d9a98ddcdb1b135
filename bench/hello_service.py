"""The framework's floor for `bench/serving.py`: a bare BentoML service, one route, nothing loaded.

HELLO_WORKERS=1 bentoml serve hello_service:Hello     # in bench/
"""

import os

import bentoml


@bentoml.service(name="hello", workers=int(os.environ.get("HELLO_WORKERS", "1")))
class Hello:
    @bentoml.api
    def hello(self) -> str:
        return "hello"
