"""Ground truth and scoring: what a simulated estate really did (the ledger) against what the
service raised (alarms, plan activations), and the alarm-management figures of ISA-18.2 /
EEMUA 191. Sits above ``simulators/`` and ``alerts/`` so that the weather episodes of the
ledger come from the very level definitions the service uses."""
