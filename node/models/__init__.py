"""models: models served from inference engines, called with any OpenAI client, paid per token.

``_messages.py`` defines ``/mercato/infer/1.0.0`` (a streamed chat completion,
its signed `InferReceipt`, and the payment after delivery); ``_openai.py`` the
part of OpenAI's chat-completions format this node takes and gives;
``_backend.py`` a provider's engine over its OpenAI-compatible HTTP API.
`ModelService` is the provider's side (``[models]`` engines, their health and
card offers, the calls); `ModelRouter` the user's (choice, failover before the
first chunk, the receipt's check, payment), and `ModelRouter.call_for` the
model calls of the agents this node runs (``mercato.infer``).

Imports node's core modules, the tasks, registry and money subpackages,
mercato.settlement and mercato.p2p; never control.
"""

from ._backend import Engine as Engine
from ._backend import EngineDown as EngineDown
from ._backend import EngineRefused as EngineRefused
from ._messages import INFER as INFER
from ._messages import BadModelRequest as BadModelRequest
from ._messages import InferReceipt as InferReceipt
from ._messages import ModelError as ModelError
from ._messages import ModelUnavailable as ModelUnavailable
from ._messages import NoModel as NoModel
from ._messages import cost as cost
from ._openai import Answer as Answer
from ._openai import ChatRequest as ChatRequest
from ._openai import error_body as error_body
from ._openai import loads_strict as loads_strict
from ._openai import parse_chat as parse_chat
from ._openai import usage_of as usage_of
from ._router import CallEvent as CallEvent
from ._router import ModelCall as ModelCall
from ._router import ModelRouter as ModelRouter
from ._router import collect_answer as collect_answer
from ._router import read_call_receipt as read_call_receipt
from ._service import ModelService as ModelService

__all__ = [
    "INFER",
    "Answer",
    "BadModelRequest",
    "CallEvent",
    "ChatRequest",
    "Engine",
    "EngineDown",
    "EngineRefused",
    "InferReceipt",
    "ModelCall",
    "ModelError",
    "ModelRouter",
    "ModelService",
    "ModelUnavailable",
    "NoModel",
    "collect_answer",
    "cost",
    "error_body",
    "loads_strict",
    "parse_chat",
    "read_call_receipt",
    "usage_of",
]
