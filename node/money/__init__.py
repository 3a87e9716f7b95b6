"""money: settlement (mercato.settlement) run in the daemon.

`SettlementService` holds the node's wallet and its ledger, opens channels,
pays for tasks and accepts payments (each state stored before it is
acknowledged), and runs the watcher that closes channels before their lockup
ends and refunds them after. `Payment` is what a paid task carries; `earnings`
sums what the tasks served and the channels paid this node.

Imports node's core modules, mercato.settlement and mercato.p2p; never builds,
registry, tasks or control.
"""

from ._earnings import ServedTask as ServedTask
from ._earnings import earnings as earnings
from ._payment import Payment as Payment
from ._service import SettlementService as SettlementService
from ._service import channel_info as channel_info
from ._service import open_settlement as open_settlement
from ._service import task_amounts as task_amounts

__all__ = [
    "Payment",
    "ServedTask",
    "SettlementService",
    "channel_info",
    "earnings",
    "open_settlement",
    "task_amounts",
]
