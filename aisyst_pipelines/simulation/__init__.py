"""Generators for the demo, the tests and the benchmarks — never part of the billing path.

- `calls`: realistic, seeded sample calls and writers for every CDR format (canonical CSV/JSONL,
  Twilio JSONL, Asterisk Master.csv);
- `voice_server`: the voice platform's meter events for those calls, with drops, late duplicates
  and delays injected, replayed against Stripe.

They may import the domain (`cdr`, `billing`); nothing in the product imports them.
"""

from .calls import (
    CdrFileWriter,
    WrittenFile,
    account_profiles,
    iter_simulated_calls,
    simulate_calls,
    write_calls,
    write_sample_files,
)
from .voice_server import (
    MeteredCall,
    MeterEventSend,
    SendKind,
    VoiceServerFaults,
    VoiceServerPlan,
    plan_meter_events,
    replay,
)

__all__ = [
    "CdrFileWriter",
    "MeterEventSend",
    "MeteredCall",
    "SendKind",
    "VoiceServerFaults",
    "VoiceServerPlan",
    "WrittenFile",
    "account_profiles",
    "iter_simulated_calls",
    "plan_meter_events",
    "replay",
    "simulate_calls",
    "write_calls",
    "write_sample_files",
]
