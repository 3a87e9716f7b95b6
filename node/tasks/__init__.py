"""tasks: running agents for others and having others run them, paid per task.

``_messages.py`` defines ``/mercato/task/1.0.0`` (quote, run and ack ops), the
signed `Quote` and the signed `Receipt`; ``_cards.py`` the signed agent cards
of ``mercato/cards/2/<group>`` and ``/mercato/card/1.0.0`` (`CardExchange`: the
groups a node follows, and the first look-up of a ref's providers).
`TaskService` is the provider's side (quotes, runs, cards and heartbeats);
`TaskRunner` the user's (candidates, quotes, choice, retries, second opinions);
``_choice.py`` holds the one scoring formula, ``_reputation.py`` each
provider's decaying standing, and `TaskLog` the task log, written by group
commit together with the reputation a task changed (a model call is logged as a
task, with its tokens in and out; `TaskLog.usage` sums them per side and
listing). `SpendLog` records what this node's tasks paid, by UTC day, and the
`Budget` of each run in flight; `RunKeys` keeps the result of runs asked with
an idempotency key, so that a retry never runs or pays again.
`TaskService.offer_here` and `run_here` serve a buyer from outside the network
(the x402 gateway) with the same runs, receipts and task log. `prove_receipt`
checks a paid task's receipt against the close of its channel on the ledger.
``_subcalls.py`` is a composite agent's way out: `SubCalls` makes the sub-calls
of one run for the provider (agents through `TaskRunner`, models through an
`Infer` the models part gives), and `check_subcalls` checks the receipt's list
of them for the user before it pays.

Imports node's core modules, the builds, registry and money subpackages,
mercato.runtime, mercato.crdt, mercato.settlement and mercato.p2p; never control.
"""

from ._cards import AgentCard as AgentCard
from ._cards import CardBook as CardBook
from ._cards import CardExchange as CardExchange
from ._cards import CardForwarder as CardForwarder
from ._cards import ModelOffer as ModelOffer
from ._choice import rank as rank
from ._idempotency import SCHEMA as _KEYS_SCHEMA
from ._idempotency import RunKeys as RunKeys
from ._log import SCHEMA as _LOG_SCHEMA
from ._log import TOKENS_SCHEMA as TOKENS_SCHEMA
from ._log import TaskLog as TaskLog
from ._log import TaskRecord as TaskRecord
from ._messages import BadReceipt as BadReceipt
from ._messages import KeyReused as KeyReused
from ._messages import NoProvider as NoProvider
from ._messages import Quote as Quote
from ._messages import Receipt as Receipt
from ._messages import SubCall as SubCall
from ._messages import TaskError as TaskError
from ._messages import TaskRefused as TaskRefused
from ._messages import UnknownAgent as UnknownAgent
from ._messages import decode_subcalls as decode_subcalls
from ._messages import sign_object as sign_object
from ._messages import typed_object as typed_object
from ._messages import verified_object as verified_object
from ._proof import NoProof as NoProof
from ._proof import prove as prove_receipt
from ._reputation import SCHEMA as _REPUTATION_SCHEMA
from ._runner import TaskRunner as TaskRunner
from ._service import LocalOffer as LocalOffer
from ._service import LocalRun as LocalRun
from ._service import TaskService as TaskService
from ._spending import SCHEMA as _SPENDING_SCHEMA
from ._spending import Budget as Budget
from ._spending import SpendLog as SpendLog
from ._spending import day_start as day_start
from ._subcalls import Charged as Charged
from ._subcalls import Infer as Infer
from ._subcalls import ReceiptReader as ReceiptReader
from ._subcalls import SubResult as SubResult
from ._subcalls import check_subcalls as check_subcalls

SCHEMA = _LOG_SCHEMA + _REPUTATION_SCHEMA
"""The task log and the reputation of providers (node migration 6)."""
SPENDING_SCHEMA = _SPENDING_SCHEMA + _KEYS_SCHEMA
"""What tasks paid, and the results of runs by idempotency key (node migration 7)."""
# TOKENS_SCHEMA: the tokens a model call read and wrote, in the task log (node migration 11).

__all__ = [
    "SCHEMA",
    "SPENDING_SCHEMA",
    "TOKENS_SCHEMA",
    "AgentCard",
    "Charged",
    "Infer",
    "ReceiptReader",
    "SubCall",
    "SubResult",
    "check_subcalls",
    "decode_subcalls",
    "BadReceipt",
    "Budget",
    "CardBook",
    "CardExchange",
    "CardForwarder",
    "KeyReused",
    "ModelOffer",
    "LocalOffer",
    "LocalRun",
    "NoProof",
    "NoProvider",
    "Quote",
    "Receipt",
    "RunKeys",
    "SpendLog",
    "TaskError",
    "TaskLog",
    "TaskRecord",
    "TaskRefused",
    "TaskRunner",
    "TaskService",
    "sign_object",
    "typed_object",
    "verified_object",
    "UnknownAgent",
    "day_start",
    "prove_receipt",
    "rank",
]
